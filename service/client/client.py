"""`Client`: the service from Python, shaped like the clients people already use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from symopt_core.spec_tree import spec_tree

from ..credentials import credentials_path, read_credentials
from .errors import AuthError, CredentialsError
from .http import Transport
from .jobs import Job
from .studies import Study
from .sweeps import Sweep
from .uploads import dataset_format, upload_dataset_path, upload_model_path

if TYPE_CHECKING:  # the spec models import torch; the client itself needs only their trees
    from service.study_spec import StudySpec
    from service.sweep_spec import SweepSpec
    from symopt_core.spec import JobSpec

__all__ = ["DEFAULT_URL", "Client"]

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """The service at `url` with `api_key`. Each falls back to $SYMOPT_URL / $SYMOPT_API_KEY, then to
    what `symopt login` (or the first `symopt serve`) saved in ~/.config/symopt/credentials.json.

        client = Client()
        job = client.submit("examples/quickstart.yaml", overrides={"optimizer.lr": 0.01})
        job.wait()
        job.metrics(["val_loss"])

    Connection errors, 502/503/504 and 429 are retried with backoff (`retries` times); every
    submission carries an Idempotency-Key, so a retried POST never creates a second job.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 6,
        backoff: float = 0.5,
    ) -> None:
        path = credentials_path()
        saved = read_credentials(path) or {}
        keys = [
            ("api_key=", api_key),
            ("$SYMOPT_API_KEY", os.environ.get("SYMOPT_API_KEY")),
            (str(path), saved.get("api_key")),
        ]
        self.looked_at = ", ".join(where for where, _ in keys)
        found = next(((where, key) for where, key in keys if key), None)
        if found is None:
            raise CredentialsError(
                f"No API key: looked at {self.looked_at}. Pass api_key=, set SYMOPT_API_KEY, or run "
                "`symopt login URL` (the first `symopt serve` of the embedded default saves one too)"
            )
        self.key_source, key = found
        self.api_key = key  # handed to the commands `symopt agent` runs
        self.url = (url or os.environ.get("SYMOPT_URL") or saved.get("url") or DEFAULT_URL).rstrip("/")
        self.transport = Transport(self.url, key, timeout=timeout, retries=retries, backoff=backoff)

    def __repr__(self) -> str:
        return f"Client({self.url!r}, key from {self.key_source})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """A JSON request to the service (the retry policy of `Transport`); a rejected key's error
        says where the key came from."""
        try:
            return self.transport.request(method, path, **kwargs)
        except AuthError as error:
            raise AuthError(
                error.status,
                f"{error.message}: the service {self.url} rejected the key from {self.key_source} "
                f"(looked at {self.looked_at}); `symopt login {self.url}` stores a new one",
            ) from None

    def me(self) -> dict[str, Any]:
        """The tenant and key id this client acts for (checks the key)."""
        found: dict[str, Any] = self.request("GET", "/v1/me")
        return found

    def ready(self) -> bool:
        """True when the service answers, is ready and accepts the key."""
        try:
            ready = self.transport.http.get("/readyz", timeout=2.0).status_code == 200
            return ready and bool(self.me())
        except (httpx.TransportError, AuthError):
            return False

    # -- jobs ---------------------------------------------------------------------------------

    def submit(
        self,
        spec: JobSpec | Mapping[str, Any] | str | Path,
        *,
        overrides: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a job: a JobSpec, a dict, or the path of a YAML/JSON spec, with dotted-path
        `overrides` as `symopt train --set` takes them ({"optimizer.lr": 0.01}). The service
        validates the spec (a ValidationError carries its message and field errors)."""
        body = spec_tree(spec, overrides)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Job(self, self.request("POST", "/v1/jobs", json=body, headers=headers))

    def job(self, job_id: str) -> Job:
        return Job.read(self, job_id)

    def jobs(
        self,
        *,
        status: str | list[str] | None = None,
        name: str | None = None,
        sweep_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        """This tenant's jobs, newest first; `status` is one status or several."""
        statuses = ",".join([status] if isinstance(status, str) else status or [])
        params = {"status": statuses, "name": name, "sweep_id": sweep_id, "limit": limit, "offset": offset}
        page = self.request(
            "GET", "/v1/jobs", params={k: v for k, v in params.items() if v not in (None, "")}
        )
        return [Job(self, data) for data in page["data"]]

    # -- sweeps -------------------------------------------------------------------------------

    def submit_sweep(
        self,
        spec: SweepSpec | Mapping[str, Any] | str | Path,
        *,
        overrides: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Sweep:
        """Queue a sweep: a SweepSpec, a dict or a YAML/JSON path (overrides as for `submit`,
        e.g. {"base.steps": 500})."""
        body = spec_tree(spec, overrides)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Sweep(self, self.request("POST", "/v1/sweeps", json=body, headers=headers))

    def sweep(self, sweep_id: str) -> Sweep:
        return Sweep.read(self, sweep_id)

    def sweeps(
        self, *, status: str | list[str] | None = None, limit: int = 50, offset: int = 0
    ) -> list[Sweep]:
        """This tenant's sweeps, newest first."""
        statuses = ",".join([status] if isinstance(status, str) else status or [])
        params: dict[str, Any] = {
            "limit": limit,
            "offset": offset,
            **({"status": statuses} if statuses else {}),
        }
        return [Sweep(self, data) for data in self.request("GET", "/v1/sweeps", params=params)["data"]]

    # -- studies ------------------------------------------------------------------------------

    def submit_study(
        self,
        spec: StudySpec | Mapping[str, Any] | str | Path,
        *,
        overrides: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Study:
        """Queue a comparison study: a StudySpec, a dict or a YAML/JSON path (overrides as for
        `submit`, e.g. {"tuning.n_trials": 4, "seeds": 5})."""
        body = spec_tree(spec, overrides)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Study(self, self.request("POST", "/v1/studies", json=body, headers=headers))

    def study(self, study_id: str) -> Study:
        return Study.read(self, study_id)

    def studies(
        self, *, status: str | list[str] | None = None, limit: int = 20, offset: int = 0
    ) -> list[Study]:
        """This tenant's studies, newest first (results of finished ones)."""
        statuses = ",".join([status] if isinstance(status, str) else status or [])
        params: dict[str, Any] = {
            "limit": limit,
            "offset": offset,
            **({"status": statuses} if statuses else {}),
        }
        return [Study(self, data) for data in self.request("GET", "/v1/studies", params=params)["data"]]

    # -- datasets and models ------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | Path,
        *,
        format: str | None = None,
        text_field: str = "text",
        name: str | None = None,
    ) -> dict[str, Any]:
        """Upload a dataset (a text, jsonl or parquet file, a tar of text files, or a directory of
        them; `format` None: from the file's name) and return its record; name it in a spec as
        data: {dataset: <id>}."""
        where = Path(path)
        params = {
            "format": format or dataset_format(where),
            "text_field": text_field,
            "name": name or where.name,
        }
        found: dict[str, Any] = upload_dataset_path(self.transport, where, params)
        return found

    def datasets(self) -> list[dict[str, Any]]:
        """This tenant's datasets, newest first."""
        found: list[dict[str, Any]] = self.request("GET", "/v1/datasets")["data"]
        return found

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """A dataset's record, with the bpe tokenizers trained on it so far."""
        found: dict[str, Any] = self.request("GET", f"/v1/datasets/{dataset_id}")
        return found

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset (refused with a ConflictError while a job uses it)."""
        self.request("DELETE", f"/v1/datasets/{dataset_id}", repeatable=True)

    def download_tokenizer(self, dataset_id: str, key: str, dest: str | Path) -> Path:
        """Save a tokenizer trained on the dataset (the tokenizers library's tokenizer.json)."""
        response = self.transport.send("GET", f"/v1/datasets/{dataset_id}/tokenizers/{key}")
        target = Path(dest)
        target.write_bytes(response.content)
        return target

    def upload_model(self, path: str | Path, *, name: str | None = None) -> dict[str, Any]:
        """Upload a transformers model: the directory save_pretrained wrote (with its tokenizer, for
        data.tokenizer: model), or a tar of it; name it in a spec as model: {family: hf, path: <id>}."""
        where = Path(path)
        found: dict[str, Any] = upload_model_path(self.transport, where, name or where.name)
        return found

    def uploaded_models(self) -> list[dict[str, Any]]:
        """This tenant's uploaded models, newest first."""
        found: list[dict[str, Any]] = self.request("GET", "/v1/models/uploads")["data"]
        return found

    def delete_model(self, model_id: str) -> None:
        """Delete an uploaded model (refused with a ConflictError while a job uses it)."""
        self.request("DELETE", f"/v1/models/uploads/{model_id}", repeatable=True)

    def classify(
        self,
        model: Mapping[str, Any],
        *,
        preset: str = "symmetric",
        mapping: Mapping[str, Any] | None = None,
        vocab_size: int | None = None,
    ) -> dict[str, Any]:
        """The class, layout and rule of every parameter of a model spec ({family: hf, config: ...}),
        before any job runs; a ValidationError names the parameters no class claims."""
        body: dict[str, Any] = {"model": dict(model), "preset": preset, "mapping": dict(mapping or {})}
        if vocab_size is not None:
            body["data"] = {"tokenizer": "bpe", "vocab_size": vocab_size}
        found: dict[str, Any] = self.request("POST", "/v1/models:classify", json=body)
        return found
