"""What a submitted job needs beyond its spec's own validation: the uploads it names belong to the
tenant and fit it, and a transformers model builds and classifies (on the meta device).

Called by the job, sweep and study routes, which FastAPI runs in its thread pool: building a
transformers config and classifying a model takes from milliseconds to seconds, never on the
event loop.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from symopt_core.errors import ConfigError
from symopt_core.spec import JobSpec

from ..errors import NotFoundError
from ..settings import Settings
from ..store.models import Dataset, UploadedModel
from ..store.uploads import Upload, get_upload

__all__ = ["check_submission"]


def check_submission(
    session: Session, *, tenant_id: str, spec: JobSpec, settings: Settings, executor: str = "service"
) -> None:
    """A ConfigError (422) naming what to fix when the spec's dataset or model is not the tenant's,
    the dataset cannot fill one sequence of each split, the model does not build, or the service
    is asked to run a model only the user's own script can build."""
    if spec.model.is_custom and executor != "agents":
        raise ConfigError(
            "model.family 'custom' is a model your own training script builds, which the service cannot "
            "run as a job: submit a sweep or study with `executor: agents` and run `symopt agent ID -- "
            "python your_script.py`"
        )
    if spec.data.dataset is not None:
        _check_dataset(session, tenant_id, spec)
    if spec.model.is_hf:
        path = spec.model.path
        if path is not None and path.startswith("mdl_"):
            model = _owned(session, UploadedModel, tenant_id, path, "model.path", "symopt models upload")
            if spec.data.tokenizer == "model" and not model.has_tokenizer:
                raise ConfigError(
                    f"data.tokenizer 'model': the uploaded model {path} has no tokenizer files; upload the "
                    "model directory with its tokenizer (save_pretrained of both), or use char, byte or bpe"
                )
        from symopt_core.models.hf_check import check_hf_model

        check_hf_model(spec, settings.assets())


def _owned(
    session: Session, model: type[Upload], tenant_id: str, upload_id: str, field: str, command: str
) -> Upload:
    try:
        return get_upload(session, model, tenant_id=tenant_id, upload_id=upload_id)
    except NotFoundError:
        raise ConfigError(
            f"{field}: no upload {upload_id} (upload it with `{command}`, or check the id)"
        ) from None


def _check_dataset(session: Session, tenant_id: str, spec: JobSpec) -> None:
    assert spec.data.dataset is not None
    found = _owned(session, Dataset, tenant_id, spec.data.dataset, "data.dataset", "symopt datasets upload")
    # A byte-level tokenizer makes at most one token per byte (plus one between documents): an
    # upper bound on the tokens of each split, known before anything is tokenized.
    most = found.text_bytes + found.documents
    val = int(most * spec.data.val_fraction)
    need = spec.data.seq_len + 1
    if min(most - val, val) < need:
        raise ConfigError(
            f"data.dataset {found.id} is too small for one sequence of data.seq_len={spec.data.seq_len}: its "
            f"{found.text_bytes:,} bytes of text make at most {most - val:,} train and {val:,} val tokens "
            f"at val_fraction={spec.data.val_fraction}, and each split needs {need}; lower data.seq_len "
            "or upload more text"
        )
