"""Requests and answers of the agent protocol: claim a trial, report points, finish it."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from symopt_core.spec import printable

__all__ = [
    "AgentTrialPublic",
    "ClaimIn",
    "ClaimPublic",
    "FinishIn",
    "LeasePublic",
    "PointIn",
    "ReportIn",
    "ReportPublic",
]

MAX_STEP = 2**31 - 1
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_seconds: int | None = Field(
        None,
        ge=5,
        le=3600,
        description="how long the lease lasts without a report; None: the service's default",
    )
    host: str = Field("", max_length=200, description="the agent's host, shown with its trials")

    @field_validator("host")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable(value, "host") if value else value


class LeasePublic(BaseModel):
    token: str = Field(description="send it as the Symopt-Lease header of every report and the finish")
    expires_at: datetime
    seconds: int = Field(description="each report (or heartbeat: a report of no points) renews it by this")


class AgentTrialPublic(BaseModel):
    job_id: str = Field(description="the job the trial reports into (metrics, events, dashboard)")
    name: str
    kind: Literal["trial", "confirmation"] = Field(
        description="trial: a sweep's (or a study's tuning) trial; confirmation: a study's seeded run"
    )
    sweep_id: str | None
    study_id: str | None
    number: int | None = Field(description="the trial's number in its Optuna study")
    candidate: str | None = Field(description="a study's candidate")
    preset: str
    params: dict[str, Any] = Field(description="the searched values, by spec path")
    optimizer: dict[str, Any] = Field(
        description="the trial's optimizer section, its values set: preset, lr, weight decay, overrides"
    )
    spec: dict[str, Any] = Field(description="the trial's whole job spec: optimizer, batch, steps, seed")
    attempt: int
    resume_step: int | None = Field(
        description="resume from the checkpoint stored at this step (GET /v1/jobs/{id}/checkpoint); "
        "None: from scratch"
    )
    lease: LeasePublic


class ClaimPublic(BaseModel):
    trial: AgentTrialPublic | None = Field(description="the claimed trial; None when none waits now")
    done: bool = Field(description="the sweep or study has finished: stop asking")
    status: str = Field(description="the sweep's or study's status")
    retry_after: float = Field(description="seconds to wait before asking again when no trial was given")
    reason: str | None = Field(None, description="why no trial was given")


class PointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    step: int = Field(ge=0, le=MAX_STEP)
    value: float | Literal["nan", "inf", "-inf"] = Field(description='a number, or "nan", "inf", "-inf"')

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable(value, "a metric name")

    @property
    def number(self) -> float:
        return _NON_FINITE[self.value] if isinstance(self.value, str) else float(self.value)


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[PointIn] = Field(
        default_factory=list, max_length=10_000, description="none: a heartbeat that only renews the lease"
    )


class ReportPublic(BaseModel):
    stored: int = Field(description="points written (a point reported again overwrites itself)")
    status: str = Field(description="the job's status after this report")
    should_prune: bool = Field(description="the sweep's pruner stopped this trial: finish it as pruned")
    cancel_requested: bool = Field(description="a user cancelled the trial: stop and finish it")
    stop: bool = Field(description="stop training: pruned, cancelled or diverged")
    pruned_at_tokens: int | None
    diverged_at: int | None
    lease_expires_at: datetime | None


class FinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    status: Literal["succeeded", "failed", "pruned"]
    objective: float | None = Field(
        None, description="succeeded: the value to minimise; None: from the reported val_loss points"
    )
    error: str | None = Field(None, max_length=20_000, description="failed: what went wrong")
