"""Search spaces: explicit ranges, or `auto` derived from the preset and the model; trial specs.

The `auto` rule (documented in the README, tested for the reference sizes):

- lr: log-uniform over [c/8, 8c]. c is the preset's base lr, scaled for width only where the
  preset's step does not already transfer across width: the matrix presets scale every update
  to per-entry RMS lr/sqrt(fan_in) (Keller Jordan's rule), so their lr is used as is; AdamW's
  per-entry step does not shrink with width, so c = 1e-3 * sqrt(256 / d_model) (clipped to a
  factor of 4 either way), a muP-flavoured prior between nanoGPT's 1e-3 at d=128 and GPT-2's
  6e-4 at d=768.
- batch size: powers of two in [B*/4, 4B*] around the critical batch of the base spec's token
  budget T = steps * batch * seq_len, from B*S = c * T^(2/3) (ALGORITHMS.md 11.2) with c
  calibrated on the nanoGPT CPU reference (12 x 64 tokens per step at T = 1.536M, c = 0.0577),
  widened to the powers of two either side of the base batch when it lies outside (a base batch
  of 16 with B* = 2 searches 1..16, not 1..8).
  Trials keep the base token budget: a trial with batch b runs steps * batch / b steps (its
  warmup and eval, checkpoint and log intervals scale the same way).
- per-class step sizes (only with `per_class_lr: true`): `optimizer.overrides.<class>.lr_scale`,
  log-uniform over [1/4, 4], for each class of the base model that the preset runs with a rule
  other than its hidden matrices' (symmetric on GPT-2: the row-norm tied embedding, the AdamW-run
  position embedding and vectors; muon: the AdamW-run parts; adamw: none). lr_scale multiplies the
  class's derived default lr (symopt_core/presets.py), so 1 is the prior and the searched lr still
  moves every class together. The classes come from the model itself, built on the meta device.
  Off by default: with the 8 trials of a study, every extra dimension thins out what a TPE search
  learns about the lr; turn it on with budgets of a few dozen trials or more.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from service.sweep_spec import LR_SCALE_RANGE, ParamRange, SweepSpec, lr_scale_path
from symopt_core.errors import ConfigError
from symopt_core.models.registry import build_config, build_model
from symopt_core.params import ParamClass
from symopt_core.presets import HIDDEN_CLASSES, PRESETS, param_groups
from symopt_core.proxy import CRITICAL_BATCH_C
from symopt_core.spec import JobSpec, set_path

from .substudies import sub_studies

__all__ = [
    "CRITICAL_BATCH_C",
    "SAMPLER_PACKAGES",
    "auto_search_space",
    "check_sampler",
    "distribution",
    "make_pruner",
    "make_sampler",
    "off_hidden_rule_classes",
    "resolved_spaces",
    "sampler_seed",
    "search_space",
    "startup_trials",
    "token_budget",
    "trial_spec",
]

_ADAMW_LR_AT_256 = 1e-3


def token_budget(spec: JobSpec) -> int:
    return spec.steps * spec.batch.size * spec.data.seq_len


_CUSTOM_WIDTH = 256  # a custom model that does not state its d_model: the centre of AdamW's prior


def _width(spec: JobSpec) -> int:
    if spec.model.is_custom:
        return int(spec.model.dims.get("d_model", _CUSTOM_WIDTH))
    return int(build_config(spec.model.family, spec.model.size, **spec.model.dims).d_model)


def off_hidden_rule_classes(base: JobSpec, preset: str) -> list[ParamClass]:
    """The classes of the base spec's model that `preset` (with the base's overrides) runs with a
    rule none of its hidden matrices runs, in ParamClass order."""
    dims = {"max_seq_len": base.data.seq_len, **base.model.dims}
    with torch.device("meta"):  # shapes and names only: no memory, whatever the size
        model = build_model(base.model.family, base.model.size, **dims)
    groups = param_groups(model, preset, overrides=base.optimizer.override_options())
    rules = {ParamClass(g["param_class"]): g["rule"] for g in groups}
    hidden = {rule for param_class, rule in rules.items() if param_class in HIDDEN_CLASSES}
    return [c for c in ParamClass if c in rules and rules[c] not in hidden]


def _lr_scales(base: JobSpec, preset: str) -> dict[str, ParamRange]:
    low, high = LR_SCALE_RANGE
    return {
        lr_scale_path(c.value): ParamRange(type="log_uniform", low=low, high=high)
        for c in off_hidden_rule_classes(base, preset)
    }


def auto_search_space(base: JobSpec, preset: str, *, per_class_lr: bool = False) -> dict[str, ParamRange]:
    """The documented rule (module docstring) for `preset` on the base spec's model and budget."""
    chosen = PRESETS[preset]
    if preset == "adamw":
        center = _ADAMW_LR_AT_256 * min(4.0, max(0.25, math.sqrt(256 / _width(base))))
    else:
        center = chosen.lr
    critical = CRITICAL_BATCH_C * token_budget(base) ** (2 / 3) / base.data.seq_len
    # Widened to hold the base batch: the user's own choice is always among the candidates.
    own = base.batch.size
    low = min(max(1, 2 ** math.floor(math.log2(max(1.0, critical / 4)))), 2 ** math.floor(math.log2(own)))
    high = max(min(65_536, 2 ** math.ceil(math.log2(max(1.0, critical * 4)))), 2 ** math.ceil(math.log2(own)))
    return {
        "optimizer.lr": ParamRange(type="log_uniform", low=center / 8, high=center * 8),
        "batch.size": ParamRange(type="pow2", low=low, high=max(low, high)),
        **(_lr_scales(base, preset) if per_class_lr else {}),
    }


def search_space(spec: SweepSpec, preset: str, base: JobSpec | None = None) -> dict[str, ParamRange]:
    """The space of `preset`'s study on `base` (a proxy's shrunk job; default the sweep's base).
    A proxy sweep's auto space leaves the batch at the proxy's: the transfer compares the best
    lr of each width at one batch rule, which a batch searched per width would blur."""
    if spec.search_space is not None:
        return dict(spec.search_space)
    space = auto_search_space(base or spec.base, preset, per_class_lr=spec.per_class_lr)
    if not spec.auto_batch_size or spec.proxy is not None:
        del space["batch.size"]
    return space


def resolved_spaces(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """What the sweep stores: {preset (or "default"), `@proxy` for a proxy sweep: {path: range as
    JSON}}, "auto" worked out."""
    return {
        sub.space_key: {
            path: r.model_dump(exclude_none=True)
            for path, r in search_space(spec, sub.tuned_preset(), sub.base).items()
        }
        for sub in sub_studies("", spec).values()
    }


def distribution(space: ParamRange) -> BaseDistribution:
    low, high = space.low or 0.0, space.high or 0.0
    if space.type == "log_uniform":
        return FloatDistribution(low, high, log=True)
    if space.type == "uniform":
        return FloatDistribution(low, high)
    if space.type == "int":
        return IntDistribution(int(low), int(high))
    if space.type == "log_int":
        return IntDistribution(int(low), int(high), log=True)
    return CategoricalDistribution(space.samples() if space.type == "categorical" else _powers(space))


def _powers(space: ParamRange) -> list[int]:
    return [2**k for k in range(63) if (space.low or 1) <= 2**k <= (space.high or 1)]


def trial_spec(base: JobSpec, params: dict[str, Any], preset: str | None) -> JobSpec:
    """The job of one trial: the base spec with the trial's values set at their paths."""
    tree = base.model_dump(mode="json")
    if preset is not None:
        tree["optimizer"]["preset"] = preset
        if "optimizer.lr" not in params:
            tree["optimizer"]["lr"] = None  # another preset's lr does not apply: its own default does
    for path, value in params.items():
        set_path(tree, path, value)
    if "batch.size" in params and params["batch.size"] != base.batch.size:
        ratio = base.batch.size / int(params["batch.size"])  # the same token budget in more or fewer steps
        tree["steps"] = max(1, round(base.steps * ratio))
        tree["schedule"]["warmup_steps"] = round(base.schedule.warmup_steps * ratio)
        tree["eval"]["every"] = max(1, round(base.eval.every * ratio))
        tree["log_every"] = max(1, round(base.log_every * ratio))
        if base.checkpoint.every:
            tree["checkpoint"]["every"] = max(1, round(base.checkpoint.every * ratio))
    return JobSpec.model_validate(tree)


def grid(space: dict[str, ParamRange], n_trials: int) -> dict[str, list[Any]]:
    """Grid points: every choice and power of two, and k log- or evenly spaced values for the
    continuous dimensions, k chosen so that the grid holds about n_trials points."""
    continuous = [p for p, r in space.items() if r.type in ("log_uniform", "uniform", "int", "log_int")]
    fixed = math.prod(
        len(_powers(r)) if r.type == "pow2" else len(r.choices or [])
        for p, r in space.items()
        if p not in continuous
    )
    k = max(2, round((n_trials / max(1, fixed)) ** (1 / max(1, len(continuous)))))
    points: dict[str, list[Any]] = {}
    for path, r in space.items():
        if path not in continuous:
            points[path] = _powers(r) if r.type == "pow2" else list(r.choices or [])
            continue
        low, high = float(r.low or 0.0), float(r.high or 0.0)
        if r.type in ("log_uniform", "log_int"):
            values = [
                math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (k - 1)) for i in range(k)
            ]
        else:
            values = [low + i * (high - low) / (k - 1) for i in range(k)]
        points[path] = sorted({round(v) for v in values}) if r.type in ("int", "log_int") else values
    return points


# Packages a sampler needs beyond Optuna itself (Optuna imports them only when it samples).
SAMPLER_PACKAGES: dict[str, tuple[str, ...]] = {"cmaes": ("cmaes",), "gp": ("scipy", "torch")}


def check_sampler(sampler: str) -> None:
    """Raise a ConfigError (a 422 at submission) naming what to install when the sampler's
    packages do not import here, rather than failing the sweep once it runs."""
    missing = []
    for package in SAMPLER_PACKAGES.get(sampler, ()):
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        names = " ".join(missing)
        raise ConfigError(
            f"sampler {sampler!r} needs the package(s) {', '.join(missing)}, which the service cannot "
            f"import: install them where the service runs (pip install {names}), or choose another "
            "sampler (tpe, random, grid)"
        )


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, less its `study.stop()` once the grid is exhausted: that stops
    `study.optimize`, which the controller does not run (it asks by n_trials), and outside it
    Optuna raises, failing the tick of the grid's last tell."""

    def after_trial(self, *_: Any) -> None:
        return None


def sampler_seed(seed: int, number: int) -> int:
    """The seed of the sampler that asks trial `number` of a study of a sweep seeded `seed`.

    A function of what the study holds, not of the process: a sampler seeded once per process
    draws its random (and start-up) points again after every restart, so trials after a restart
    would repeat earlier ones. Hashed, so that neighbouring (seed, number) pairs draw unrelated
    streams; 32 bits, numpy's seed range."""
    digest = hashlib.sha256(f"symopt.sweeps.sampler:{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def startup_trials(n_trials: int) -> int:
    """Model-based samplers (TPE, CMA-ES, GP) start from a few random trials: a third of the
    budget, 2 to 10."""
    return max(2, min(10, n_trials // 3))


def make_sampler(
    spec: SweepSpec, space: dict[str, ParamRange], *, trial_number: int | None = None
) -> optuna.samplers.BaseSampler:
    """The sweep's sampler; to ask trial `trial_number`, seeded by `sampler_seed` (see there),
    else by the sweep's seed (a sampler that never asks: the one the study is created with).

    Every sampler here keeps what it learns in the study (TPE, GP and random read its trials,
    grid its visited points, CMA-ES its pickled optimizer in the trials' system attributes), so
    a new one per ask loses nothing but a warm start of the GP's kernel fit, and a sweep asks
    the same points for a given seed and history whether or not the service restarted."""
    check_sampler(spec.sampler)  # Optuna would fail later, at its first sample, less clearly
    seed = spec.seed if trial_number is None else sampler_seed(spec.seed, trial_number)
    startup = startup_trials(spec.n_trials)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        # The sweep's seed, whatever the trial: it shuffles the grid's order once, and the grid
        # point of trial n is the n-th of that order (a per-trial seed would reshuffle it per ask).
        return _GridSampler(grid(space, spec.n_trials), seed=spec.seed)
    if spec.sampler == "cmaes":
        # Categorical dimensions (pow2 batch sizes) are sampled independently, on purpose.
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=startup, warn_independent_sampling=False
        )
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(spec: SweepSpec, budget: int) -> optuna.pruners.BasePruner:
    """Pruners count resources in training tokens, so trials of different batch sizes compare."""
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=budget // 10)
    if spec.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, budget // 16), reduction_factor=3)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, budget // 27), max_resource=budget, reduction_factor=3
        )
    return optuna.pruners.NopPruner()
