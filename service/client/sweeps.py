"""`Sweep`: a handle on a sweep of the service: progress, trials, the best so far, importances."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from .agent import Trial, claim_trials
from .handle import Handle
from .jobs import RECONNECT, Job
from .progress import Progress, poll_until_done

__all__ = ["SWEEP_FINAL", "Sweep"]

SWEEP_FINAL = frozenset({"succeeded", "failed", "cancelled"})


class Sweep(Handle):
    """A sweep of the service; `cancel()` stops its unfinished trials, finished ones stay readable."""

    collection = "/v1/sweeps"
    final = SWEEP_FINAL

    def __repr__(self) -> str:
        done, total = self.data["trials_finished"], self.data["n_trials"]
        return (
            f"Sweep({self.id!r}, name={self.data['name']!r}, status={self.status!r}, trials={done}/{total})"
        )

    def list_trials(self) -> list[dict[str, Any]]:
        """Every trial: job_id, trial_number, preset, state (pruned marked), params, objective."""
        trials: list[dict[str, Any]] = self.client.request("GET", f"/v1/sweeps/{self.id}/trials")["data"]
        return trials

    def trials(
        self, *, count: int | None = None, lease_seconds: int | None = None, host: str | None = None
    ) -> Generator[Trial, None, None]:
        """Run this `executor: agents` sweep's trials here, one after another, until it is done
        (or `count` were claimed): each a Trial to train with your own code (service/client/agent.py)."""
        return claim_trials(
            self.client, f"/v1/sweeps/{self.id}/claim", count=count, lease_seconds=lease_seconds, host=host
        )

    def jobs(self) -> list[Job]:
        """The trials' jobs, for their curves (`job.metrics()`)."""
        return [Job.read(self.client, trial["job_id"]) for trial in self.list_trials()]

    def best(self) -> dict[str, Any] | None:
        """The best finished trial so far (params, objective, job_id), or None."""
        best: dict[str, Any] | None = self.refresh().data["best"]
        return best

    def best_by_preset(self) -> dict[str, dict[str, Any]]:
        """Each compared preset's best trial, side by side."""
        found: dict[str, dict[str, Any]] = self.refresh().data["best_by_preset"]
        return found

    def importances(self) -> dict[str, dict[str, float]]:
        """{preset: {parameter path: importance}} (Optuna's evaluator)."""
        found: dict[str, dict[str, float]] = self.client.request("GET", f"/v1/sweeps/{self.id}/importances")
        return found

    def transfer(self) -> dict[str, Any] | None:
        """A proxy sweep's transfer result: per preset the best lr of each width, the slope of
        log(lr) on log(width) with its interval, the recommended full-size lr and the confirmation
        runs (None for a sweep without a proxy)."""
        found: dict[str, Any] | None = self.client.request("GET", f"/v1/sweeps/{self.id}/transfer")
        return found

    def transfer_plot(self, path: str | Path) -> Path:
        """Draw the transfer plot (objective against lr, one curve per width) into a PNG file."""
        from .transfer_plot import plot_transfer

        result = self.transfer()
        if result is None:
            raise ValueError(f"sweep {self.id} has no proxy block: there is no transfer to plot")
        return plot_transfer(result["presets"], Path(path), title=self.data.get("name") or self.id)

    def wait(self, timeout: float | None = None, progress: bool | str = True, poll: float = 2.0) -> Sweep:
        """Block until the sweep has finished and return it, showing finished trials of the
        budget; survives a restart of the service. Raises TimeoutError after `timeout` seconds."""

        def describe() -> Progress:
            best = self.data["best"]
            latest = {"best": best["objective"]} if best else {}
            done, total = self.data["trials_finished"], self.data["n_trials"]
            return Progress(self.id, self.status, done, total, latest, unit="trial")

        poll_until_done(self, describe, progress=progress, timeout=timeout, poll=poll, reconnect=RECONNECT)
        return self
