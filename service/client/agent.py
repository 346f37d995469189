"""Agents: run the service's trials in your own training script.

    client = Client()
    for trial in client.sweep(sweep_id).trials():      # claims trials until the sweep is done
        with trial:                                     # finishes it: succeeded, failed or pruned
            model = MyModel()
            optimizer = trial.build_optimizer(model)   # the trial's optimizer stack and step sizes
            for step in range(1, trial.steps + 1):
                ...
                if step % 50 == 0:
                    trial.report(step, loss=loss, val_loss=evaluate(model))
                    if trial.should_prune():
                        trial.prune()                  # raises TrialPruned; `with` finishes it pruned

A trial holds a lease that its reports renew, and a heartbeat thread renews it between reports;
if the process dies, the lease runs out and the service offers the trial to the next agent (from
the checkpoint stored with `save_checkpoint`, else from scratch). `symopt agent ID -- python
train.py` runs a script once per trial; the script reads its trial with `symopt.trial()`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Generator, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import ConflictError
from .handle import Connection

if TYPE_CHECKING:
    import torch

__all__ = [
    "TRIAL_ENV",
    "LeaseLostError",
    "Trial",
    "TrialPruned",
    "claim_trials",
    "trial_from_environment",
]

TRIAL_ENV = "SYMOPT_TRIAL"  # `symopt agent` hands its child the claimed trial as JSON here


class TrialPruned(Exception):  # noqa: N818 - named as Optuna's, which users know
    """Raised by `trial.prune()`: a `with trial:` block ends it as pruned (and swallows this)."""


class LeaseLostError(RuntimeError):
    """The trial's lease ran out (no report or heartbeat for its length) and the service gave it to
    another agent: this run's results no longer count; stop it."""


def _value(value: Any) -> float | str:
    number = float(value.item() if hasattr(value, "item") else value)
    if math.isfinite(number):
        return number
    return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")


class Trial:
    """One claimed trial: what to train (`params`, `spec`, `build_optimizer`) and where to report.

    Use it as a context manager, or call `finish()`, `fail()` or `prune()` yourself. The
    heartbeat thread (started unless heartbeat=False) renews the lease every third of its length."""

    def __init__(self, client: Connection, data: Mapping[str, Any], *, heartbeat: bool = True) -> None:
        self.client = client
        self.data = dict(data)
        self.lease_token = str(data["lease"]["token"])
        self.lease_seconds = int(data["lease"]["seconds"])
        self.last_answer: dict[str, Any] = {}
        self.finished: dict[str, Any] | None = None  # the job's JSON once finished
        self.lost = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if heartbeat:
            self.start_heartbeat()

    def __repr__(self) -> str:
        return f"Trial({self.job_id!r}, number={self.number}, params={self.params})"

    # -- what to train ----------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return str(self.data["job_id"])

    @property
    def number(self) -> int | None:
        number = self.data.get("number")
        return None if number is None else int(number)

    @property
    def params(self) -> dict[str, Any]:
        """The searched values by spec path, e.g. {"optimizer.lr": 0.02, "batch.size": 16}."""
        return dict(self.data["params"])

    @property
    def spec(self) -> dict[str, Any]:
        """The trial's whole job spec (JSON): optimizer, schedule, batch, steps, seed."""
        return dict(self.data["spec"])

    @property
    def preset(self) -> str:
        return str(self.data["preset"])

    @property
    def lr(self) -> float | None:
        """The base step size (None: the preset's default)."""
        lr = self.spec["optimizer"].get("lr")
        return None if lr is None else float(lr)

    @property
    def batch_size(self) -> int:
        return int(self.spec["batch"]["size"])

    @property
    def steps(self) -> int:
        return int(self.spec["steps"])

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def resume_step(self) -> int | None:
        """The step of the checkpoint this attempt resumes from (`load_checkpoint()`), or None."""
        step = self.data.get("resume_step")
        return None if step is None else int(step)

    def build_optimizer(self, model: torch.nn.Module, *, mapping: Mapping[str, Any] | None = None) -> Any:
        """The trial's optimizer for your model: its preset, lr, weight decay, per-class overrides
        and schedule-free settings, through symopt_core.build_optimizer. `mapping` classifies
        parameters the classifier does not know ({name pattern: class or (class, layout)})."""
        from symopt_core.spec_optimizer import build_spec_optimizer

        optimizer = self.spec["optimizer"]
        merged = {**optimizer.get("mapping", {}), **(mapping or {})}
        return build_spec_optimizer(model, optimizer, mapping=merged)

    def lr_scheduler(self, optimizer: Any) -> Any:
        """The spec's step-size schedule (warmup, then cosine, linear, wsd or constant) over its
        `steps`, as a torch LambdaLR to `step()` once per optimizer step."""
        import torch

        from symopt_core.schedules import lr_multiplier

        schedule, total = self.spec["schedule"], self.steps

        def multiplier(step: int) -> float:
            return lr_multiplier(
                step,
                kind=schedule["kind"],
                total_steps=total,
                warmup_steps=schedule["warmup_steps"],
                decay_frac=schedule["decay_frac"],
                min_lr_ratio=schedule["min_lr_ratio"],
            )

        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)

    # -- reporting --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        """A request under the lease: the service's 409 for a lost lease becomes LeaseLostError
        (and stops the heartbeat); other conflicts pass as they are."""
        try:
            yield
        except ConflictError as error:
            if "lease" in error.message:
                self.lost = True
                self._stop.set()
                raise LeaseLostError(error.message) from None
            raise

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        with self._holding():
            return self.client.request(
                "POST",
                f"/v1/jobs/{self.job_id}/{path}",
                json=body,
                headers={"Symopt-Lease": self.lease_token},
                repeatable=True,  # reports overwrite themselves; a finished trial answers as it is
            )

    def report(self, step: int, **metrics: Any) -> dict[str, Any]:
        """Store metric points at `step` (numbers, 0-d tensors; NaN is stored as such and ends the
        trial `diverged`); renews the lease. Returns the answer: should_prune, cancel_requested,
        stop. `val_loss` is what the sweep's pruner and objective read."""
        points = [{"name": name, "step": int(step), "value": _value(v)} for name, v in metrics.items()]
        answer: dict[str, Any] = self._post("report", {"points": points})
        self.last_answer = answer
        return answer

    def should_prune(self) -> bool:
        """Whether the sweep's pruner stopped this trial (as of the last report)."""
        return bool(self.last_answer.get("should_prune"))

    def should_stop(self) -> bool:
        """Whether to stop training: pruned, cancelled by a user, or diverged."""
        return bool(self.last_answer.get("stop"))

    def heartbeat(self) -> None:
        """Renew the lease without reporting (the heartbeat thread does this for you)."""
        self.last_answer = self._post("report", {"points": []})

    def start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"symopt-lease-{self.job_id[:8]}", daemon=True
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        interval = max(1.0, self.lease_seconds / 3)
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except LeaseLostError:
                return
            except Exception:  # the service is away for a moment: the next beat tries again
                continue

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self, step: int, state: Any) -> None:
        """Store `state` (torch.save-able: model and optimizer state dicts, the step, RNG state) as
        this trial's checkpoint after `step`: a later attempt resumes from it."""
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        with self._holding():
            self.client.transport.send(
                "PUT",
                f"/v1/jobs/{self.job_id}/checkpoint",
                params={"step": int(step)},
                content=buffer.getvalue(),
                headers={"Symopt-Lease": self.lease_token, "Content-Type": "application/octet-stream"},
                repeatable=True,
            )

    def load_checkpoint(self, *, weights_only: bool = True) -> Any:
        """The state stored by the attempt this one resumes (None when it starts from scratch)."""
        if self.resume_step is None:
            return None
        import torch

        response = self.client.transport.send("GET", f"/v1/jobs/{self.job_id}/checkpoint")
        return torch.load(io.BytesIO(response.content), map_location="cpu", weights_only=weights_only)

    # -- the end ----------------------------------------------------------------------------------

    def _finish(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self._stop.set()
        if self.finished is None:
            self.finished = self._post("finish", body)
        return self.finished

    def finish(self, objective: float | None = None) -> dict[str, Any]:
        """Succeeded: with `objective` (lower is better), or the sweep's objective of the reported
        val_loss points. Returns the job as the service stored it."""
        return self._finish({"status": "succeeded", "objective": objective})

    def fail(self, error: str) -> dict[str, Any]:
        return self._finish({"status": "failed", "error": error[-20_000:]})

    def prune(self) -> None:
        """Stop here because the pruner said so: raises TrialPruned (a `with trial:` block ends the
        trial as pruned); outside a `with` block, call `finish_pruned()` instead."""
        raise TrialPruned(f"trial {self.number} of {self.data.get('sweep_id')} was pruned")

    def finish_pruned(self) -> dict[str, Any]:
        return self._finish({"status": "pruned"})

    def close(self) -> None:
        """Finish the trial if it is still open: cancelled when a user cancelled it, succeeded
        when it reported what the objective needs, else failed with the service's reason. Stops
        the heartbeat."""
        self._stop.set()
        if self.finished is not None or self.lost:
            return
        if self.last_answer.get("cancel_requested"):  # a failed finish of a cancelling trial: cancelled
            self.fail("cancelled by a user")
            return
        try:
            self.finish()
        except ConflictError as error:
            self.fail(f"the trial ended without finishing: {error.message}")

    def __enter__(self) -> Trial:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self.lost:
            return False
        if kind is None:
            self.close()
            return False
        if isinstance(error, TrialPruned) or (kind is not None and issubclass(kind, TrialPruned)):
            self.finish_pruned() if self.should_prune() else self.fail("TrialPruned raised without a prune")
            return True
        if self.finished is None:
            self.fail("".join(traceback.format_exception(kind, error, tb)))
        return False


def agent_host() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_trials(
    client: Connection,
    claim_path: str,
    *,
    count: int | None = None,
    lease_seconds: int | None = None,
    host: str | None = None,
    heartbeat: bool = True,
) -> Generator[Trial, None, None]:
    """Claim trials from `claim_path` one after another until the sweep (or study) is done, or
    `count` were claimed; waits while none is free. A trial the loop body left open is finished
    when the next is asked for (succeeded if it reported its objective), or failed when the loop
    is left early."""
    claimed = 0
    body = {"lease_seconds": lease_seconds, "host": host or agent_host()}
    while count is None or claimed < count:
        answer = client.request("POST", claim_path, json=body)
        if answer["trial"] is None:
            if answer["done"]:
                return
            time.sleep(float(answer["retry_after"]))
            continue
        trial = Trial(client, answer["trial"], heartbeat=heartbeat)
        claimed += 1
        try:
            yield trial
        except GeneratorExit:
            if trial.finished is None and not trial.lost:
                trial.fail("the agent's loop stopped before the trial finished")
            raise
        trial.close()


def trial_from_environment() -> Trial:
    """The trial `symopt agent` claimed for this process (its SYMOPT_TRIAL), with a client of the
    same service and key; the agent keeps its lease alive while the process runs."""
    raw = os.environ.get(TRIAL_ENV)
    if not raw:
        raise RuntimeError(
            f"symopt.trial(): no trial in this process's environment ({TRIAL_ENV}): run the script under "
            "`symopt agent SWEEP_ID -- python script.py`, or claim trials in Python with "
            "`Client().sweep(SWEEP_ID).trials()`"
        )
    from .client import Client

    handed = json.loads(raw)
    return Trial(Client(url=handed["url"]), handed["trial"], heartbeat=False)
