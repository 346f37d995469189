"""Public shapes of the API's responses (requests reuse symopt_core's JobSpec and SweepSpec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from symopt_core.spec import Name

from ..store.metrics import MetricsPage
from ..store.models import Job, JobEvent, Sweep
from ..store.results import JobResult
from ..store.status import JobStatus, SweepStatus

__all__ = [
    "ApiKeyPublic",
    "ApiKeysPublic",
    "ErrorPublic",
    "EventPublic",
    "EventsPublic",
    "HistoryTrialPublic",
    "IntermediatePublic",
    "JobPublic",
    "JobsPublic",
    "MetricsPublic",
    "PrincipalPublic",
    "ProblemPublic",
    "ReadinessPublic",
    "SeriesPublic",
    "StudiesPublic",
    "StudyHistoryPublic",
    "StudyPublic",
    "SweepHistoryPublic",
    "SweepPublic",
    "SweepsPublic",
    "TrialPublic",
    "TrialsPublic",
    "ValidationErrorPublic",
]

MetricValue = float | Literal["nan", "inf", "-inf"]


class ErrorPublic(BaseModel):
    """The body of every error answer but a 422."""

    message: str = Field(description="what went wrong, and what to do about it")
    detail: str = Field(description="the same as `message` (kept for clients that read `detail`)")


class ProblemPublic(BaseModel):
    loc: list[str] = Field(description="where: the field path in the body, or query/header/path and its name")
    msg: str = Field(description="what is wrong there, and what would be valid")
    type: str


class ValidationErrorPublic(BaseModel):
    """The body of a 422: a request, query or spec that does not validate."""

    detail: list[ProblemPublic]
    message: str = Field(description="every problem on one line: `field.path: message; ...`")


class ReadinessPublic(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="database, migrations and ray: ok, or what is wrong")


class PrincipalPublic(BaseModel):
    tenant: str = Field(description="the tenant whose jobs and sweeps this key sees")
    key_id: str = Field(description="the key's public id (the part after `sym_`)")
    is_admin: bool


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Name = Field(
        min_length=1, max_length=200, description="the tenant the key acts for; created if new"
    )
    name: Name = Field("", max_length=200, description="a label for the key (who or what uses it)")
    admin: bool = Field(False, description="an admin key (it may create keys and read /metrics)")


class ApiKeyCreatedPublic(BaseModel):
    tenant: str
    key_id: str
    api_key: str = Field(description="the key itself: shown once, stored only as a hash")
    is_admin: bool


class ApiKeyPublic(BaseModel):
    """A key as listed: never its secret (stored only as a hash, and that hash is not shown)."""

    model_config = ConfigDict(from_attributes=True)

    key_id: str = Field(description="the key's public id (the part after `sym_`)")
    tenant: str
    name: str
    is_admin: bool
    created_at: datetime
    revoked_at: datetime | None = Field(description="when it was revoked; null while it works")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    count: int


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: JobStatus
    attempt: int
    max_attempts: int
    spec: dict[str, Any] = Field(description="the validated JobSpec, with defaults filled in")
    sweep_id: str | None
    trial_number: int | None
    study_id: str | None = Field(None, description="a comparison study's confirmation run: the study")
    step: int = Field(description="newest step reported")
    best_val_loss: float | None
    diverged_at: int | None
    queued_reason: str | None = Field(description="why a queued job has not started yet")
    error: str | None
    result: JobResult | None = Field(description="what the finished run reported (store/results.py)")
    executor: Literal["service", "agents"] = Field(
        "service", description="service: run on the service's workers; agents: by a user's own script"
    )
    agent_host: str | None = Field(None, description="agents: the host of the agent that holds (held) it")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls.model_validate(job)


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="jobs matching the filters in all (not only this page)")


class SeriesPublic(BaseModel):
    name: str
    steps: list[int]
    values: list[MetricValue] = Field(description='finite numbers, or "nan", "inf", "-inf"')


class MetricsPublic(BaseModel):
    job_id: str
    series: list[SeriesPublic]
    last_step: int | None = Field(description="newest step in this response")
    truncated: bool = Field(
        description="more points follow: ask again with after_seq=next_seq (or, paging by step without "
        "after_seq, since_step=last_step)"
    )
    next_seq: int = Field(
        description="follow with after_seq=next_seq: every point stored after this answer comes, a point "
        "rewritten by a retried attempt included (paging by since_step: the first page's next_seq)",
    )
    thinned: bool = Field(
        False, description="with max_points: some series were thinned (min-max per run, extremes kept)"
    )

    @classmethod
    def of(cls, job_id: str, page: MetricsPage) -> MetricsPublic:
        return cls(
            job_id=job_id,
            series=[SeriesPublic(name=s.name, steps=s.steps, values=s.values) for s in page.series],
            last_step=page.last_step,
            truncated=page.truncated,
            next_seq=page.next_seq,
            thinned=page.thinned,
        )


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    time: datetime
    kind: str
    step: int | None
    message: str
    data: dict[str, Any]

    @classmethod
    def of(cls, event: JobEvent) -> EventPublic:
        return cls.model_validate(event)


class EventsPublic(BaseModel):
    data: list[EventPublic]
    last_id: int = Field(description="pass as after_id to read what comes next")


class TrialPublic(BaseModel):
    job_id: str
    trial_number: int | None
    study: str | None = Field(description="the Optuna study (one per compared preset)")
    preset: str
    status: JobStatus
    state: Literal[
        "pruned", "queued", "running", "cancelling", "succeeded", "failed", "cancelled", "diverged"
    ] = Field(description="the job's status, or pruned when the sweep's pruner stopped it")
    pruned_at_tokens: int | None
    params: dict[str, Any]
    objective: float | None
    finished_at: datetime | None
    agent_host: str | None = Field(None, description="an agent sweep's trial: the host of its agent")


class TrialsPublic(BaseModel):
    data: list[TrialPublic]
    count: int


class SweepPublic(BaseModel):
    id: str
    name: str
    status: SweepStatus
    spec: dict[str, Any]
    study_name: str = Field(description="the Optuna study (same database): optuna-dashboard <db url>")
    n_trials: int
    trials_finished: int
    trials_running: int
    best: TrialPublic | None
    best_by_preset: dict[str, TrialPublic] = Field(
        description="each compared preset's best trial, side by side"
    )
    search_space: dict[str, Any] | None = Field(description='{preset: {path: range}}, "auto" worked out')
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, sweep: Sweep, trials: list[TrialPublic]) -> SweepPublic:
        finished = [t for t in trials if t.status.terminal]
        # A pruned trial whose job ran to its end anyway is no candidate: Optuna counts it PRUNED.
        scored = [
            t
            for t in finished
            if t.objective is not None and t.status == JobStatus.SUCCEEDED and t.state != "pruned"
        ]
        best = min(scored, key=lambda t: t.objective or 0.0) if scored else None
        by_preset: dict[str, TrialPublic] = {}
        for trial in sorted(scored, key=lambda t: t.objective or 0.0):
            by_preset.setdefault(trial.preset, trial)
        return cls(
            id=sweep.id,
            name=sweep.name,
            status=SweepStatus(sweep.status),
            spec=sweep.spec,
            study_name=sweep.study_name,
            n_trials=sweep.n_trials,
            trials_finished=len(finished),
            trials_running=sum(1 for t in trials if t.status in (JobStatus.RUNNING, JobStatus.CANCELLING)),
            best=best,
            best_by_preset=by_preset,
            search_space=sweep.resolved_space,
            error=sweep.error,
            created_at=sweep.created_at,
            updated_at=sweep.updated_at,
            finished_at=sweep.finished_at,
        )


class StudyPublic(BaseModel):
    id: str
    name: str
    status: SweepStatus
    stage: str = Field(description="tuning (stage 1 sweeps), confirming (stage 2 seeded runs), or done")
    spec: dict[str, Any]
    progress: dict[str, Any] = Field(
        description="{tuning: {candidate: {sweep_id, status, trials_finished, n_trials}}, "
        "confirmation: {planned, created, finished}}"
    )
    result: dict[str, Any] | None = Field(
        description="per candidate: tuned params, objective by seed, mean, std and intervals, tokens to "
        "target, val-loss curve (mean, min, max over seeds); paired differences against the baseline "
        "with their verdicts, and between every other pair of candidates (pairwise, pairwise_verdicts); "
        "caveats: what the verdicts rest on (tuning left in the sampler's random start-up, a tuned lr at "
        "the edge of its range, the seeds a difference of the observed size would need). "
        "So far while running; in the list, only for finished studies"
    )
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class StudiesPublic(BaseModel):
    data: list[StudyPublic]
    count: int


class SweepsPublic(BaseModel):
    data: list[SweepPublic]
    count: int


class IntermediatePublic(BaseModel):
    tokens: int = Field(description="training tokens when the trial was evaluated (the pruner's resource)")
    value: float = Field(description="the validation loss reported to the pruner")


class HistoryTrialPublic(BaseModel):
    number: int = Field(description="the Optuna trial number")
    job_id: str | None
    state: Literal["complete", "pruned", "failed", "running"]
    params: dict[str, Any] = Field(description="the sampled values, by dotted JobSpec path")
    objective: float | None = Field(
        description="the value told to Optuna (the objective, or diverged_value); None if pruned or failed"
    )
    best_so_far: float | None = Field(
        description="the lowest objective of the trials completed up to and including this one"
    )
    completed_at: datetime | None
    intermediate: list[IntermediatePublic] = Field(description="the validation losses, in token order")


class StudyHistoryPublic(BaseModel):
    preset: str
    study: str = Field(description="the Optuna study")
    finished: list[HistoryTrialPublic] = Field(description="finished trials, in completion order")
    running: list[HistoryTrialPublic] = Field(description="trials still running, by number")


class SweepHistoryPublic(BaseModel):
    """The data of an optimization-history plot (objective and best so far per finished trial),
    a parameter-vs-objective plot (params, objective) and intermediate-value curves."""

    sweep_id: str
    data: list[StudyHistoryPublic] = Field(description="one entry per compared preset")
