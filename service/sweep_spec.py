"""The sweep spec: a base job, a search space over dotted JobSpec paths, a sampler, a pruner.

Defined here (pydantic only) so the API, the client and the sweep controller share one model.
Every search-space path is checked by setting its bounds into the base spec and validating it,
so a path that does not exist or a range the spec rejects is a 422 that names the path.
`per_class_lr` adds per-class step-size factors to the auto space (service/sweeps/space.py).
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from symopt_core.presets import PRESETS
from symopt_core.proxy import ProxySpec, proxy_sizes
from symopt_core.spec import (
    MAX_SEED,
    JobSpec,
    Name,
    OmitsUnusedFields,
    describe_validation_error,
    printable,
    set_path,
)

__all__ = [
    "LR_SCALE_RANGE",
    "MAX_JOB_CHECKS",
    "OUTLINE",
    "Executor",
    "ParamRange",
    "SweepSpec",
    "check_executor",
    "check_proxy",
    "checks_jobs",
    "job_checks",
    "lr_scale_path",
]

# per_class_lr: each searched class's lr_scale, log-uniform around its derived default lr.
LR_SCALE_RANGE = (0.25, 4.0)

# The most job specs validating one sweep (or study) spec may build: one per compared preset and
# per search-space bound or choice of each preset. Each costs ~50 us of CPU; without a cap, a
# 53 KB categorical over 7 presets asked for 45 000 of them (over 3 s) before its last one failed.
# Real sweeps need tens (a study of 16 candidates searching 5 ranges: 176).
MAX_JOB_CHECKS = 1_000

# Validation context for a spec's outline: its fields, counts and caps, without building the job
# spec of each search-space bound (`model_validate(body, context=OUTLINE)`). The service checks
# an outline in its request thread and the job specs of a large one in a separate process.
OUTLINE = {"check_jobs": False}


def checks_jobs(info: ValidationInfo) -> bool:
    return not (isinstance(info.context, dict) and info.context.get("check_jobs") is False)


# Who runs the trials: the service's own loop on its Ray workers, or agents (users' own training
# scripts, anywhere that reaches the service over HTTP) that claim them.
Executor = Literal["service", "agents"]


def check_executor(executor: str, base: JobSpec, per_class_lr: bool) -> None:
    """A custom model (built by the user's script) runs only through agents, and its classes are
    unknown to the service, so per_class_lr cannot be derived for it."""
    if base.model.is_custom and executor != "agents":
        raise ValueError(
            "base.model.family 'custom' is a model your own script builds: set `executor: agents` and run "
            "`symopt agent ID -- python your_script.py` (or describe a model symopt can build)"
        )
    if base.model.is_custom and per_class_lr:
        raise ValueError(
            "per_class_lr needs the model's parameter classes, which the service cannot know of a custom "
            "model: name the lr_scale paths in an explicit search_space instead"
        )


def check_proxy(proxy: ProxySpec | None, base: JobSpec, executor: str, search_space: Any) -> None:
    """A proxy sweep tunes the lr at shrunk sizes of a model the service builds, and fits how its
    best value moves with width: the lr must be searched, and every proxy must make a valid job."""
    if proxy is None:
        return
    if executor != "service":
        raise ValueError(
            "proxy: the service builds each proxy's model, so its trials run with `executor: service`"
        )
    if search_space is not None and "optimizer.lr" not in search_space:
        raise ValueError(
            "proxy: the transfer is fitted on the best optimizer.lr of each width; search optimizer.lr "
            '(or use search_space: "auto")'
        )
    try:
        proxy_sizes(base, proxy)
    except ValueError as error:
        raise ValueError(f"proxy: {error}") from None


def lr_scale_path(param_class: str) -> str:
    return f"optimizer.overrides.{param_class}.lr_scale"


class ParamRange(BaseModel):
    """One dimension of a search space."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: Literal["log_uniform", "uniform", "int", "log_int", "pow2", "categorical"]
    low: float | None = None
    high: float | None = None
    choices: list[float | int | str | bool] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ParamRange:
        for choice in self.choices or []:
            if isinstance(choice, str):
                printable(choice, "a categorical choice")
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical range needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} range needs `low` and `high`")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"invalid range [{self.low}, {self.high}]: need finite low <= high")
        if self.type in ("log_uniform", "log_int", "pow2") and self.low <= 0:
            raise ValueError(f"a {self.type} range needs low > 0, got {self.low}")
        if self.type in ("int", "log_int", "pow2") and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"a {self.type} range needs integer bounds, got [{self.low}, {self.high}]")
        if (
            self.type == "pow2"
            and self.low.is_integer()
            and not _powers_of_two(int(self.low), int(self.high))
        ):
            raise ValueError(f"no power of two lies in [{self.low}, {self.high}]")
        return self

    def samples(self) -> list[Any]:
        """Values that must all be valid at the path: the bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "pow2":
            powers = _powers_of_two(int(self.low or 1), int(self.high or 1))
            return [powers[0], powers[-1]]
        if self.type in ("int", "log_int"):
            return [int(self.low or 0), int(self.high or 0)]
        return [self.low, self.high]


def _powers_of_two(low: int, high: int) -> list[int]:
    return [2**k for k in range(63) if low <= 2**k <= high]


class SweepSpec(OmitsUnusedFields):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # A spec without a proxy dumps as it did before proxies existed (stored specs, idempotency).
    _omitted_when_unused: ClassVar[tuple[str, ...]] = ("proxy",)

    # At most 150: a trial's job is named `<sweep>-<optuna study>-<number>` and job names hold 200.
    name: Name = Field("", max_length=150)
    base: JobSpec
    search_space: dict[str, ParamRange] | None = Field(
        None, description='dotted JobSpec paths -> ranges; "auto" or null: derived from the preset and model'
    )
    auto_batch_size: bool = Field(True, description="auto: search the batch size too (at equal token budget)")
    per_class_lr: bool = Field(
        False,
        description="auto: search an lr_scale in [1/4, 4] for each class not run with the hidden matrices' "
        "rule (off by default: few trials spread over more dimensions find less)",
    )
    presets: list[str] | None = Field(None, description="compare presets: each gets the same trial budget")
    sampler: Literal["tpe", "random", "grid", "cmaes", "gp"] = "tpe"
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "median"
    objective: Literal["best_val_loss", "final_val_loss", "tokens_to_target"] = "best_val_loss"
    diverged_value: float | None = Field(None, description="objective told for diverged trials; None: FAIL")
    target_loss: PositiveFloat | None = Field(None, description="tokens_to_target: the loss to reach")
    n_trials: PositiveInt = Field(20, le=10_000, description="trials per preset")
    parallelism: PositiveInt = Field(1, le=256)
    max_wall_time_s: PositiveFloat | None = None
    max_tokens: PositiveInt | None = Field(
        None, description="stop starting trials after this many tokens in all"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)
    executor: Executor = Field(
        "service",
        description="service: trials run on the service's Ray workers; agents: users' own training scripts "
        "claim them (`symopt agent`, `client.sweep(id).trials()`), `parallelism` of them out at once",
    )
    proxy: ProxySpec | None = Field(
        None,
        description="tune the lr on shrunk copies of the base model (n_trials per preset and width), fit "
        "its move with width and recommend the full model's; auto: the lr alone is searched",
    )

    @field_validator("search_space", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        return None if value == "auto" else value

    @property
    def auto_search_space(self) -> bool:
        return self.search_space is None

    @property
    def job_checks(self) -> int:
        """How many job specs validating this sweep builds."""
        return job_checks(self.search_space, self.per_class_lr, self.presets, self.proxy)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> SweepSpec:
        if self.objective == "tokens_to_target" and self.target_loss is None:
            raise ValueError("objective tokens_to_target needs target_loss")
        check_executor(self.executor, self.base, self.per_class_lr)
        check_proxy(self.proxy, self.base, self.executor, self.search_space)
        for preset in self.presets or []:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r} in presets; valid presets: {', '.join(PRESETS)}")
        if self.job_checks > MAX_JOB_CHECKS:
            raise ValueError(
                f"this sweep's search_space and presets make {self.job_checks} jobs to check (every bound "
                f"or choice of every path, for each preset); at most {MAX_JOB_CHECKS} are accepted: search "
                "fewer categorical choices, paths or presets"
            )
        if self.search_space is not None and not self.search_space:
            raise ValueError('search_space is empty: name at least one path, or use "auto"')
        if not checks_jobs(info):
            return self
        base = self.base.model_dump(mode="json", exclude_unset=False)
        # Each compared preset runs the base job under its own name (and default lr): check that
        # job now, rather than failing the sweep when the controller builds its first trial.
        variants = {} if self.presets else {self.base.optimizer.preset: base}
        for preset in self.presets or []:
            variant = copy.deepcopy(base)
            variant["optimizer"]["preset"] = preset
            variant["optimizer"]["lr"] = None
            _check_job(variant, f"presets: {preset!r} with this base")
            variants[preset] = variant
        if self.per_class_lr:
            _check_per_class_lr(self.search_space is None, variants)
        if self.search_space is not None:
            for path, space in self.search_space.items():
                _check_schedule_free_path(path, list(variants))
                for tree in variants.values():
                    for value in space.samples():
                        _check_path(tree, path, value)
        return self


def job_checks(
    search_space: dict[str, ParamRange] | None,
    per_class_lr: bool,
    presets: list[str] | None = None,
    proxy: ProxySpec | None = None,
) -> int:
    """How many job specs validating a sweep builds: each compared preset's job, then per distinct
    preset (the base's own when none are compared) each sample of each path and per_class_lr's two
    bounds; and two per proxy width (its shrunk job, with its token budget)."""
    variants = len(set(presets)) if presets else 1
    per_variant = sum(len(space.samples()) for space in (search_space or {}).values())
    per_variant += len(LR_SCALE_RANGE) if per_class_lr else 0
    proxies = 2 * len(proxy.width) if proxy is not None else 0
    return len(presets or []) + variants * per_variant + proxies


_SCHEDULE_FREE_PREFIX = "optimizer.schedule_free."


def _check_schedule_free_path(path: str, presets: list[str]) -> None:
    """The schedule-free wrapper's arguments (momentum, weight_lr_power, ...) only exist for the
    schedule-free presets; searching them under another preset would change nothing."""
    if not path.startswith(_SCHEDULE_FREE_PREFIX):
        return
    others = [p for p in presets if PRESETS[p].schedule_free is None]
    if others:
        valid = ", ".join(p for p, preset in PRESETS.items() if preset.schedule_free is not None)
        raise ValueError(
            f"search_space[{path!r}] applies to schedule-free presets only ({valid}), not to "
            f"{', '.join(repr(p) for p in others)}"
        )


def _check_per_class_lr(auto: bool, variants: dict[str, dict[str, Any]]) -> None:
    """per_class_lr belongs to the auto space; its factors must make valid jobs of every variant
    (checked on the `all` alias: which classes a model has is known to the auto space, not here)."""
    if not auto:
        raise ValueError(
            "per_class_lr applies to search_space auto only; with an explicit search_space, name the "
            f"paths yourself ({lr_scale_path('embedding')}: {{type: log_uniform, low: 0.25, high: 4}})"
        )
    path = lr_scale_path("all")
    for tree in variants.values():
        for value in LR_SCALE_RANGE:
            scaled = copy.deepcopy(tree)
            set_path(scaled, path, value)
            _check_job(scaled, f"per_class_lr: {path} = {value}")


def _check_job(tree: dict[str, Any], what: str) -> None:
    try:
        JobSpec.model_validate(tree)
    except ValidationError as error:
        raise ValueError(f"{what} makes an invalid job: {describe_validation_error(error)}") from None


def _check_path(base: dict[str, Any], path: str, value: Any) -> None:
    try:
        tree = _copy_along(base, path)
        set_path(tree, path, value)
        JobSpec.model_validate(tree)
    except ValidationError as error:
        raise ValueError(
            f"search_space[{path!r}] = {value!r} makes an invalid job: {describe_validation_error(error)}"
        ) from None
    except ValueError as error:
        raise ValueError(f"search_space[{path!r}]: {error}") from None


def _copy_along(tree: dict[str, Any], path: str) -> dict[str, Any]:
    """`tree` with the mappings on `path` copied, so that set_path changes the copy alone (what
    lies beside the path is shared, unchanged: a deep copy per checked value cost 3x the check)."""
    copied = node = dict(tree)
    for key in path.split(".")[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            break  # set_path creates or replaces it, in this copy
        node[key] = node = dict(child)
    return copied
