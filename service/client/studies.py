"""`Study`: a handle on a comparison study: progress, the result so far, its sweeps and runs."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from .agent import Trial, claim_trials
from .handle import Handle
from .jobs import RECONNECT, Job
from .progress import Progress, poll_until_done
from .sweeps import SWEEP_FINAL, Sweep

__all__ = ["Study"]


class Study(Handle):
    """A study of the service; `cancel()` stops its sweeps and runs, what finished stays readable."""

    collection = "/v1/studies"
    final = SWEEP_FINAL

    def __repr__(self) -> str:
        return f"Study({self.id!r}, name={self.data['name']!r}, status={self.status!r}, stage={self.stage!r})"

    @property
    def stage(self) -> str:
        return str(self.data["stage"])

    @property
    def result(self) -> dict[str, Any] | None:
        """Per candidate: tuned params, objective by seed, summary, tokens to target, curve;
        `comparisons` and `verdicts` against the baseline, `pairwise` and `pairwise_verdicts`
        between the other candidates (so far, while running)."""
        result: dict[str, Any] | None = self.data.get("result")
        return result

    @property
    def verdicts(self) -> list[str]:
        return list((self.result or {}).get("verdicts", []))

    @property
    def caveats(self) -> list[str]:
        """What the verdicts rest on: tuning left in the sampler's start-up, a tuned lr at the
        edge of its range, the seeds a difference of the observed size would need."""
        return list((self.result or {}).get("caveats", []))

    def sweeps(self) -> dict[str, Sweep]:
        """Stage 1: each candidate's tuning sweep."""
        tuning = self.data["progress"]["tuning"]
        return {name: Sweep.read(self.client, t["sweep_id"]) for name, t in tuning.items() if t["sweep_id"]}

    def trials(
        self, *, count: int | None = None, lease_seconds: int | None = None, host: str | None = None
    ) -> Generator[Trial, None, None]:
        """Run this `executor: agents` study here: its candidates' tuning trials, then its seeded
        confirmation runs, each a Trial to train with your own code, until the study is done."""
        return claim_trials(
            self.client, f"/v1/studies/{self.id}/claim", count=count, lease_seconds=lease_seconds, host=host
        )

    def runs(self) -> dict[str, list[Job]]:
        """Stage 2: each candidate's confirmation runs, by seed."""
        return {
            candidate["name"]: [Job.read(self.client, run["job_id"]) for run in candidate["runs"]]
            for candidate in (self.result or {}).get("candidates", [])
        }

    def wait(self, timeout: float | None = None, progress: bool | str = True, poll: float = 3.0) -> Study:
        """Block until the study has finished and return it, showing tuning trials and then
        confirmation runs done; survives a restart of the service. TimeoutError after `timeout` s."""

        def describe() -> Progress:
            tuning = self.data["progress"]["tuning"].values()
            confirmation = self.data["progress"]["confirmation"]
            total = sum(t["n_trials"] for t in tuning) + confirmation["planned"]
            done = sum(t["trials_finished"] for t in tuning) + confirmation["finished"]
            return Progress(self.id, f"{self.status}/{self.stage}", done, total, unit="run")

        poll_until_done(self, describe, progress=progress, timeout=timeout, poll=poll, reconnect=RECONNECT)
        return self

    def report(self, directory: str | Path) -> Path:
        """Write `report.md` with its PNG figures into `directory` (paste it into a paper or a
        PR); returns the Markdown file."""
        from .report import write_report

        self.refresh()
        sweeps = {name: (sweep.data, sweep.list_trials()) for name, sweep in self.sweeps().items()}
        return write_report(self.data, sweeps, Path(directory))
