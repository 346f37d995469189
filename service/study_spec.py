"""The study spec: which optimizer stack trains a model best, with tuned, seeded, equal-budget evidence.

A study compares candidates (preset names, or full optimizer specs under a name of their own) on
one base job. Stage 1 tunes each candidate with a sweep of its own, all with the same trial
budget, search space rule, sampler and pruner. Stage 2 re-runs each candidate's best
configuration on k fresh seeds, the same seeds for every candidate, so that the comparison is
paired. Defined here (pydantic only) so the API, the client and the controller share one model.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from symopt_core.proxy import ProxySpec
from symopt_core.spec import MAX_SEED, JobSpec, Name, OmitsUnusedFields, OptimizerSpec

from .sweep_spec import MAX_JOB_CHECKS, Executor, ParamRange, SweepSpec, checks_jobs, job_checks

__all__ = ["Candidate", "StudySpec", "TuningSpec"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Candidate(BaseModel):
    """One optimizer stack of the comparison: a name and the spec's `optimizer` section."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    optimizer: OptimizerSpec

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"invalid candidate name {value!r}: use up to 64 letters, digits, '_', '.' or '-'"
            )
        return value


class TuningSpec(BaseModel):
    """Stage 1, the same for every candidate: the budget that makes the comparison fair."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_trials: PositiveInt = Field(8, le=1_000, description="trials per candidate")
    search_space: dict[str, ParamRange] | None = Field(
        None, description='dotted JobSpec paths -> ranges; "auto" or null: derived per candidate'
    )
    auto_batch_size: bool = True
    per_class_lr: bool = Field(
        False, description="auto: also search each non-hidden class's lr_scale (SweepSpec.per_class_lr)"
    )
    sampler: Literal["tpe", "random", "grid", "cmaes", "gp"] = "tpe"
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "median"
    parallelism: PositiveInt = Field(2, le=256, description="trials of one candidate at once")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("search_space", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        return None if value == "auto" else value


class StudySpec(OmitsUnusedFields):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # A spec without a proxy dumps as it did before proxies existed (stored specs, idempotency).
    _omitted_when_unused: ClassVar[tuple[str, ...]] = ("proxy",)

    # At most 80: its sweeps are named `<study>-<candidate>` (candidates: 64), within a sweep's 150.
    name: Name = Field("", max_length=80)
    base: JobSpec
    candidates: list[Candidate] = Field(min_length=2, max_length=16)
    baseline: str | None = Field(
        None, description="the candidate every other is compared with; default: first"
    )
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    seeds: int | list[int] = Field(
        3, description="confirmation runs per candidate: k (seeds base.seed+1 .. base.seed+k), or the seeds"
    )
    objective: Literal["best_val_loss", "final_val_loss", "tokens_to_target"] = "best_val_loss"
    target_loss: PositiveFloat | None = Field(
        None, description="tokens_to_target: the loss to reach (also reported with any objective)"
    )
    confidence: float = Field(0.95, ge=0.5, le=0.999)
    bootstrap_resamples: PositiveInt = Field(10_000, ge=100, le=1_000_000)
    bootstrap_seed: int = Field(0, ge=0, le=MAX_SEED)
    parallelism: PositiveInt = Field(4, le=256, description="confirmation runs at once")
    executor: Executor = Field(
        "service",
        description="service: every run on the service's Ray workers; agents: users' own training scripts "
        "claim the tuning trials and the confirmation runs (`symopt agent STUDY_ID -- ...`)",
    )
    proxy: ProxySpec | None = Field(
        None,
        description="stage 1 tunes each candidate's lr on shrunk copies of the base model; stage 2 runs the "
        "lr recommended for the full model (extrapolated along the fitted width slope) on the seeds",
    )

    @model_validator(mode="before")
    @classmethod
    def _presets_by_name(cls, data: Any) -> Any:
        # A plain preset name is shorthand for that preset with the base's other optimizer settings
        # (weight decay, per-class overrides), its lr left to the tuning; a mapping is a whole
        # `optimizer` section of its own.
        if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
            return data
        base = data.get("base")
        optimizer = base.get("optimizer") if isinstance(base, dict) else None
        # Anything but a mapping is left to base.optimizer's own validation, which names the field.
        inherited = {k: v for k, v in optimizer.items() if k != "lr"} if isinstance(optimizer, dict) else {}
        candidates = [
            {"name": c, "optimizer": {**inherited, "preset": c}} if isinstance(c, str) else c
            for c in data["candidates"]
        ]
        return {**data, "candidates": candidates}

    @property
    def job_checks(self) -> int:
        """How many job specs validating this study builds: each candidate's sweep validates its
        base job and then its search space job by job."""
        tuning = self.tuning
        per_candidate = job_checks(tuning.search_space, tuning.per_class_lr, proxy=self.proxy)
        return len(self.candidates) * (1 + per_candidate)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StudySpec:
        names = [c.name for c in self.candidates]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"candidate names must be unique; repeated: {', '.join(repeated)}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a candidate; candidates: {', '.join(names)}")
        if self.objective == "tokens_to_target" and self.target_loss is None:
            raise ValueError("objective tokens_to_target needs target_loss")
        seeds = self.confirmation_seeds
        if not 1 <= len(seeds) <= 64:
            raise ValueError(f"seeds: {self.seeds!r}; give k from 1 to 64, or a list of 1 to 64 seeds")
        if not all(0 <= seed <= MAX_SEED for seed in seeds):
            raise ValueError(f"seeds: {self.seeds!r}; each confirmation seed must lie in [0, {MAX_SEED}]")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        if self.base.seed in seeds:
            raise ValueError(
                f"seeds must not include base.seed ({self.base.seed}): the tuning ran on it, "
                "and confirming on it would favour each candidate's tuning noise"
            )
        if self.job_checks > MAX_JOB_CHECKS:
            raise ValueError(
                f"this study's candidates and tuning.search_space make {self.job_checks} jobs to check (the "
                "base job and every bound or choice of every path, for each candidate); at most "
                f"{MAX_JOB_CHECKS} are accepted: search fewer categorical choices or paths, or compare fewer "
                "candidates"
            )
        if checks_jobs(info):
            for candidate in self.candidates:
                self.sweep_spec(candidate)  # a bad search space is an error that names its path
        return self

    @property
    def confirmation_seeds(self) -> list[int]:
        """Stage 2's seeds. Fresh by default: the tuning ran on base.seed, and re-using it
        would favour each candidate's own tuning noise."""
        if isinstance(self.seeds, int):
            return [self.base.seed + 1 + i for i in range(self.seeds)]
        return list(self.seeds)

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.candidates[0].name

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def sweep_spec(self, candidate: Candidate) -> SweepSpec:
        """Stage 1 for `candidate`: the base job with its optimizer, tuned with the shared budget."""
        tuning = self.tuning
        base = self.base.model_copy(update={"optimizer": candidate.optimizer})
        return SweepSpec.model_validate(
            {
                "name": f"{self.name or 'study'}-{candidate.name}",
                "base": base.model_dump(mode="json"),
                "search_space": None if tuning.search_space is None else dict(tuning.search_space),
                "auto_batch_size": tuning.auto_batch_size,
                "per_class_lr": tuning.per_class_lr,
                "sampler": tuning.sampler,
                "pruner": tuning.pruner,
                "objective": self.objective,
                "target_loss": self.target_loss,
                "n_trials": tuning.n_trials,
                "parallelism": tuning.parallelism,
                "seed": tuning.seed,
                "executor": self.executor,
                "proxy": None if self.proxy is None else self.proxy.model_dump(mode="json"),
            }
        )
