"""`RunRequest`: one run of a job, as the scheduler asks for it and `train` receives it.

    request = RunRequest(spec, run_dir="/srv/symopt/artifacts/jobs/j1", resume_newest=True,
                         replay_after={"train_loss": 40}, assets=settings.assets(), job_id="j1", attempt=2)
    train(request, report=..., should_stop=...)

The scheduler builds it once per attempt and it goes unchanged through Ray (a task's argument),
the warm process's socket and Ray Train's worker config down to `train`: one value with one name
for each thing, instead of loose arguments renamed on the way. Its values are plain (paths, a
spec dict, ints), so it pickles anywhere. Importing this module imports no torch: the warm relay
(worker/warm.py) unpickles requests, and must stay a light process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .assets import Assets
from .errors import ConfigError

if TYPE_CHECKING:
    from .spec import JobSpec

__all__ = ["RunRequest"]


@dataclass(frozen=True)
class RunRequest:
    # the job's spec: a JobSpec, its dict (the scheduler's: as stored), or a YAML/JSON file
    spec: JobSpec | Mapping[str, Any] | str | Path
    # checkpoints go to <run_dir>/checkpoints; none are written without it
    run_dir: Path | None = None
    # a checkpoint file, or a directory whose newest checkpoint is used (it must have one)
    resume_from: Path | None = None
    # resume from the newest checkpoint under <run_dir>/checkpoints if there is one (a job's
    # attempts: the first finds none and starts at step 0, a retry continues where one stopped)
    resume_newest: bool = False
    # when resuming, the newest step a store holds of each series ({name: step}; a series it
    # lacks has no point stored), or one step for all: what the run reports again (train's replay)
    replay_after: Mapping[str, int] | int | None = None
    # where uploads, model directories, corpora and the token cache are
    assets: Assets = field(default_factory=Assets)
    job_id: str | None = None  # the job and attempt this run is (for names and logs)
    attempt: int | None = None

    def __post_init__(self) -> None:
        for name in ("run_dir", "resume_from"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.resume_newest and self.run_dir is None:
            raise ConfigError("Invalid RunRequest: resume_newest=True needs a run_dir to find checkpoints in")
        if self.resume_newest and self.resume_from is not None:
            raise ConfigError(
                f"Invalid RunRequest: resume_from={str(self.resume_from)!r} and resume_newest=True "
                "both say where to resume; give one"
            )

    @property
    def checkpoints(self) -> Path | None:
        """Where this run's checkpoints go (and a retry's are found)."""
        return self.run_dir / "checkpoints" if self.run_dir is not None else None

    def with_resume_point(self) -> RunRequest:
        """This request with `resume_newest` settled into `resume_from`: the checkpoint it names
        now (None: none yet). A worker settles it once, so that what it reports as its resume
        point is the checkpoint `train` loads."""
        if not self.resume_newest:
            return self
        # The loop's checkpoint module imports torch: only the process that trains gets here.
        from .training.checkpoint import latest_checkpoint

        assert self.checkpoints is not None  # __post_init__: resume_newest has a run_dir
        return replace(self, resume_from=latest_checkpoint(self.checkpoints), resume_newest=False)
