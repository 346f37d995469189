"""Optimizer presets (DESIGN.md's table) and `build_optimizer`.

A preset is a declarative table: parameter class -> cell (rule + group options), one base lr,
and per-class lr multipliers derived from scaling rules rather than copied from one recipe:

- Every matrix rule runs with scale "kj": its update has per-entry RMS lr/√fan_in, the RMS of
  Keller Jordan's Muon, whatever the rule (polar, row-norm, one-sided spectral, hybrid).
- Hidden matrices (attention, MLP, experts) take the base lr (0.02, the KJ Muon default).
- AdamW parts take ADAMW_SHARE × lr (1e-3 at 0.02, the nanoGPT / Muon-aux recipe).
- Embedding (matrix rule): η = ADAMW_SHARE·lr·√d, so its per-entry RMS (η/√d) equals an AdamW
  step's (≈ lr_adamw). LM head and tied embedding: one fifth of that, HEAD_SHARE·lr·√d; both
  EO's Qwen3 recipe (5e-3 at d=1024) and our d=128 runs (2e-3, ANCHORS.md) put the head's
  per-entry RMS near 1.6e-4, about a sixth of the AdamW step.
- Routers: ROUTER_SHARE × lr = 7.5e-4 at 0.02, EO's router lr for every router rule (the adamw
  preset: its base lr).
`Preset.lr_rule` states each as an `LrRule` (a share, times √d or not; the catalog lists it).
These are priors for sweeps (`optimizer.overrides.<class>.lr_scale` multiplies them), not tuned values.

`eo_parity: true` in a class's override replaces its scale by the shape factor EO applies to
that rule (`eo_scale`, ALGORITHMS.md 1): for comparisons with EO, not a tuned recipe.

Attention layout (DESIGN.md): head-wise polar (one [head_dim, d] block per head) belongs to the
symmetric family (`symmetric`, `symmetric-hybrid`, `sf-symmetric`), whose group for attention is
head permutations × per-head O(head_dim) × O(d). `muon`, `normuon` and `sf-normuon` treat each
attention weight as one whole matrix, as torch.optim.Muon and the NorMuon reference do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import ConfigError
from .optim import SymOpt, get_rule
from .optim.options import GROUP_OPTIONS, REMOVED_OPTIONS
from .optim.schedule_free import ScheduleFree
from .params import CLASS_ALIASES, ParamClass, ParamInfo, describe_params
from .params.classify import Mapped

__all__ = [
    "HIDDEN_CLASSES",
    "OVERRIDE_KEYS",
    "PRESETS",
    "LrRule",
    "Preset",
    "build_optimizer",
    "param_groups",
]

ADAMW_SHARE = 0.05
HEAD_SHARE = 0.01
ROUTER_SHARE = 0.0375

C = ParamClass
_HIDDEN = (C.ATTN_QKV, C.ATTN_OUT, C.MLP_IN, C.MLP_OUT, C.HIDDEN, C.EXPERT_IN, C.EXPERT_OUT)
_DECAYED_BY_DEFAULT = frozenset(_HIDDEN)
HIDDEN_CLASSES: tuple[ParamClass, ...] = _HIDDEN  # the classes that take the base lr

# The lr keys of an override: "lr" is absolute, "lr_mult" multiplies the base lr, and "lr_scale"
# multiplies the lr the class would have without it (by default its derived one, the module
# docstring's share × base lr), so a sweep can search a factor around each class's prior.
_LR_KEYS = ("lr", "lr_mult", "lr_scale")
# Group options an override may set, besides the lr keys and "rule": those GROUP_OPTIONS marks.
OVERRIDE_KEYS = tuple(name for name, option in GROUP_OPTIONS.items() if option.override)
# Override keys read here, not passed on to SymOpt (eo_parity chooses the group's scale).
_PRESET_KEYS = ("eo_parity",)


@dataclass(frozen=True)
class Cell:
    rule: str
    options: Mapping[str, Any] = field(default_factory=dict)
    # The rule for fused gate/up stacks stored interleaved (gpt-oss [E, d, 2r]): ALGORITHMS.md 6
    # pairs [gate_j, up_j] there (EO's gpt_oss_gate_up_pair) rather than splitting the halves.
    interleaved_rule: str | None = None


@dataclass(frozen=True)
class LrRule:
    """A class's default lr, relative to the preset's base lr: `mult`, times √d when `sqrt_d`
    (d the row length of a [V, d] embedding or head)."""

    mult: float
    sqrt_d: bool = False

    def multiplier(self, shape: tuple[int, ...]) -> float:
        return self.mult * math.sqrt(shape[-1]) if self.sqrt_d else self.mult


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    lr: float  # the base lr: hidden matrices (AdamW's own lr for the adamw preset)
    weight_decay: float  # default decay of hidden matrices (all 2-D classes for adamw)
    cells: Mapping[ParamClass, Cell]
    matrix_options: Mapping[str, Any]  # options of a class switched to a matrix rule by an override
    adamw_options: Mapping[str, Any]
    adamw_share: float = ADAMW_SHARE
    schedule_free: Mapping[str, Any] | None = None  # ScheduleFree(...) arguments, if wrapped
    head_wise: bool = False  # attention q/k/v/o per head (the symmetric family), else whole matrices
    router_share: float = ROUTER_SHARE  # routers' lr / base lr, whatever their rule

    def lr_rule(self, param_class: ParamClass, rule: str) -> LrRule:
        """The default lr of `param_class` under `rule` (the module docstring's shares)."""
        if param_class in (C.ROUTER, C.SIGMOID_ROUTER):
            return LrRule(self.router_share)
        if get_rule(rule).elementwise:
            return LrRule(self.adamw_share)
        if param_class in (C.EMBEDDING, C.POSITION):
            return LrRule(self.adamw_share, sqrt_d=True)
        if param_class in (C.LM_HEAD, C.TIED_EMBEDDING):
            return LrRule(self.adamw_share * HEAD_SHARE / ADAMW_SHARE, sqrt_d=True)
        return LrRule(1.0)


_ADAMW = {"betas": (0.9, 0.95), "adam_eps": 1e-8}
_MUON = {"momentum": 0.95, "nesterov": True, "scale": "kj", "polar_method": "newton_schulz"}
_SYM_POLAR = {"momentum": 0.95, "nesterov": True, "scale": "kj", "polar_method": "polar_express"}
_EO = {"momentum": 0.95, "nesterov": False, "scale": "kj", "polar_method": "polar_express"}
# The router Gram is E×E: run the inverse square root to convergence, it costs nothing there.
_ROUTER = {**_EO, "invsqrt_method": "polar_express_converged"}


def _table(default: Cell, **cells: Cell) -> dict[ParamClass, Cell]:
    return {c: cells.get(c.value, default) for c in ParamClass}


def _symmetric_cells(
    polar_options: Mapping[str, Any],
    adamw_options: Mapping[str, Any],
    eo_options: Mapping[str, Any],
    router_options: Mapping[str, Any],
    **changes: Cell,
) -> dict[ParamClass, Cell]:
    cells = {
        "embedding": Cell("row_norm", eo_options),
        "tied_embedding": Cell("row_norm", eo_options),  # uncentered: the input use breaks the shift symmetry
        "lm_head": Cell("centered_row_norm", eo_options),
        "router": Cell("centered_left_spectral", router_options),
        # Sigmoid gates have no shift symmetry (ALGORITHMS.md 7): the same rule, uncentered.
        "sigmoid_router": Cell("left_spectral", router_options),
        "position": Cell("adamw", adamw_options),
        "vector": Cell("adamw", adamw_options),
    }
    return _table(Cell("polar", polar_options), **{**cells, **changes})


# Base momentum under the schedule-free wrapper (ALGORITHMS.md 10). In SF-SGD and SF-AdamW the
# interpolation y = (1 - β) z + β x replaces the base momentum, so AdamW parts run with β1 = 0.
# The matrix rules keep an EMA of μ = 0.8, as SF-NorMuon's Algorithm 1 does (the only published
# schedule-free spectral method; ALGORITHMS.md 10.2, an unverified prior): polar and row-norm map
# a gradient to a unit-size direction before z moves, so the averaging into x cannot undo the
# noise of a single batch's direction, and a short EMA in front of the normalization can.
# No Nesterov: y already evaluates the gradient ahead of x. `sf-symmetric` is therefore
# `symmetric`'s table (same rules, layouts, lr shares) with these two base momenta.
_SF_MATRIX = {**_EO, "momentum": 0.8}
_SF_ADAMW = {"betas": (0.0, 0.95), "adam_eps": 1e-8}  # SF-AdamW: the interpolation is the momentum

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("adamw", "AdamW on every parameter", 1e-3, 0.1, _table(Cell("adamw", _ADAMW)), _MUON, _ADAMW,
               adamw_share=1.0, router_share=1.0),
        Preset("muon", "Muon (KJ scale, Nesterov) on hidden and expert matrices, AdamW elsewhere", 0.02, 0.0,
               _table(Cell("adamw", _ADAMW), **{c.value: Cell("polar", _MUON) for c in _HIDDEN}),
               _MUON, _ADAMW),
        Preset("normuon", "NorMuon on hidden and expert matrices, AdamW elsewhere", 0.02, 0.0,
               _table(Cell("adamw", _ADAMW), **{c.value: Cell("normuon", {**_MUON, "beta2": 0.95})
                                                for c in _HIDDEN}),
               _MUON, _ADAMW),
        Preset("symmetric", "head-wise / per-expert polar, row-norm embedding, centered row-norm head, "
               "centered left-spectral router", 0.02, 0.0,
               _symmetric_cells(_SYM_POLAR, _ADAMW, _EO, _ROUTER), _SYM_POLAR, _ADAMW, head_wise=True),
        Preset("symmetric-hybrid", "symmetric, with row-/column-aware hybrid SwiGLU and experts (paired "
               "[gate_j, up_j] for interleaved gpt-oss experts) and a centered row-norm router", 0.02, 0.0,
               _symmetric_cells(_SYM_POLAR, _ADAMW, _EO, _ROUTER,
                                mlp_in=Cell("hybrid", _EO), mlp_out=Cell("col_hybrid", _EO),
                                expert_in=Cell("hybrid", _EO, interleaved_rule="paired_hybrid"),
                                expert_out=Cell("col_hybrid", _EO),
                                router=Cell("centered_row_norm", _EO),
                                sigmoid_router=Cell("row_norm", _EO)),
               _SYM_POLAR, _ADAMW, head_wise=True),
        Preset("sf-normuon", "schedule-free NorMuon (decay at z) on matrices, SF-AdamW elsewhere", 0.01, 0.05,
               _table(Cell("adamw", _SF_ADAMW), **{c.value: Cell("normuon", {
                   **_SF_MATRIX, "polar_method": "newton_schulz", "scale": "rms", "rms_target": 0.2,
                   "beta2": 0.95}) for c in _HIDDEN}),
               _SF_MATRIX, _SF_ADAMW, adamw_share=0.25, schedule_free={"momentum": 0.9}),
        Preset("sf-symmetric", "the schedule-free wrapper over symmetric", 0.02, 0.0,
               _symmetric_cells(_SF_MATRIX, _SF_ADAMW, _SF_MATRIX, {**_ROUTER, "momentum": 0.8}),
               _SF_MATRIX, _SF_ADAMW, schedule_free={"momentum": 0.9}, head_wise=True),
    )
}  # fmt: skip


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"Invalid preset: {name!r}; valid presets: {', '.join(PRESETS)}") from None


def eo_scale(rule: str, param_class: ParamClass, layout: str) -> str:
    """The `scale` that reproduces EO's shape factor for `rule` on `param_class` (ALGORITHMS.md 1).

    EO's Muon multiplies by √max(1, rows/cols) of each block as it orients it. Dense matrices and
    heads are (out, in), KJ's factor ("kj"). Expert `down` stacks are oriented with the neurons
    as rows, [r, d]: OLMoE's [E, d, r] through its transpose (1.0 at d = 2r, where KJ's
    √max(1, d/r) is √2), gpt-oss's (in, out)-stored [E, r, d] as it is: "kj_transposed".
    The gate/up halves keep their stored orientation: OLMoE's (out, in) [r, d] ("kj"; EO's routing
    orthogonalizes OLMoE's [2r, d] jointly, which layout "matrix" reproduces, also with "kj"),
    gpt-oss's (in, out) [d, r] ("kj_transposed", the inverse of KJ's out/in). EO's row-norm,
    one-sided spectral and hybrid optimizers apply no factor ("none").
    """
    if rule not in ("polar", "normuon"):
        return "none"
    if param_class == C.EXPERT_OUT:
        return "kj_transposed"
    if param_class == C.EXPERT_IN and layout.endswith(".t"):
        return "kj_transposed"
    return "kj"


def _expand_overrides(
    overrides: Mapping[str, str | Mapping[str, Any]] | None,
) -> dict[ParamClass, dict[str, Any]]:
    expanded: dict[ParamClass, dict[str, Any]] = {}
    valid_names = [c.value for c in ParamClass] + list(CLASS_ALIASES)

    def specificity(key: str) -> int:  # "all", then group aliases, then single classes win
        return 0 if key == "all" else 1 if key in CLASS_ALIASES else 2

    for key, value in sorted((overrides or {}).items(), key=lambda item: specificity(item[0])):
        if key in CLASS_ALIASES:
            classes = CLASS_ALIASES[key]
        elif key in valid_names:
            classes = (ParamClass(key),)
        else:
            raise ConfigError(f"Invalid override class: {key!r}; valid names: {', '.join(valid_names)}")
        options = {"rule": value} if isinstance(value, str) else dict(value)
        removed = sorted(REMOVED_OPTIONS.keys() & options.keys())
        if removed:
            name = removed[0]
            raise ConfigError(f"Invalid override key for {key!r}: {name} ({REMOVED_OPTIONS[name]})")
        unknown = set(options) - {"rule", *_LR_KEYS, *OVERRIDE_KEYS, *_PRESET_KEYS}
        if unknown:
            raise ConfigError(
                f"Invalid override key(s) for {key!r}: {', '.join(sorted(unknown))}; valid keys: rule, "
                f"{', '.join(_LR_KEYS)}, {', '.join(OVERRIDE_KEYS)}, {', '.join(_PRESET_KEYS)}"
            )
        if "rule" in options:
            get_rule(options["rule"])
        if "lr_scale" in options:
            _check_lr_scale(key, options["lr_scale"])
        for c in classes:
            expanded.setdefault(c, {}).update(options)
    return expanded


def _check_lr_scale(key: str, value: Any) -> None:
    positive = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf
    if not positive:
        raise ConfigError(
            f"Invalid lr_scale for {key!r}: {value!r}; give a positive number (1: the default lr)"
        )


def _group_for(
    preset: Preset, info: ParamInfo, base_lr: float, weight_decay: float, override: Mapping[str, Any]
) -> dict[str, Any]:
    cell = preset.cells[info.param_class]
    layout = info.layout
    if not preset.head_wise and layout.startswith(("heads_rows", "heads_cols")):
        # the whole matrix, in its stored orientation (GPT-2's Conv1D keeps its ".t")
        layout = "matrix.t" if layout.endswith(".t") else "matrix"
    default_rule = cell.rule
    if cell.interleaved_rule is not None and layout.startswith("gate_up.interleave"):
        default_rule = cell.interleaved_rule
    rule = override.get("rule", default_rule)
    if rule in (cell.rule, default_rule):
        options = dict(cell.options)
    else:  # a class moved to another rule family takes that family's options in this preset
        options = dict(preset.adamw_options if get_rule(rule).elementwise else preset.matrix_options)
    decayed = info.param_class in _DECAYED_BY_DEFAULT or (preset.name == "adamw" and info.layout != "vector")
    options["weight_decay"] = weight_decay if decayed else 0.0
    options.update({k: v for k, v in override.items() if k in OVERRIDE_KEYS})
    if override.get("eo_parity"):
        if "scale" in override:
            raise ConfigError(
                f"Invalid override for {info.param_class.value!r}: eo_parity sets the scale; "
                "give eo_parity or scale, not both"
            )
        if not get_rule(rule).elementwise:
            options["scale"] = eo_scale(rule, info.param_class, layout)
    if "lr" in override:
        lr = float(override["lr"])
    else:
        lr = base_lr * override.get("lr_mult", preset.lr_rule(info.param_class, rule).multiplier(info.shape))
    lr *= override.get("lr_scale", 1.0)
    return {"rule": rule, "layout": layout, "lr": lr, "param_class": info.param_class.value, **options}


def param_groups(
    model: nn.Module,
    preset: str = "symmetric",
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    overrides: Mapping[str, str | Mapping[str, Any]] | None = None,
    mapping: Mapping[str, Mapped] | None = None,
) -> list[dict[str, Any]]:
    """SymOpt param groups for `model` under `preset`: one group per class, layout and lr."""
    chosen = get_preset(preset)
    base_lr = chosen.lr if lr is None else lr
    decay = chosen.weight_decay if weight_decay is None else weight_decay
    expanded = _expand_overrides(overrides)
    params = dict(model.named_parameters())
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for name, info in describe_params(model, mapping=mapping).items():
        group = _group_for(chosen, info, base_lr, decay, expanded.get(info.param_class, {}))
        key = tuple(sorted((k, repr(v)) for k, v in group.items()))
        entry = groups.setdefault(key, {**group, "params": [], "param_names": []})
        entry["params"].append(params[name])
        entry["param_names"].append(name)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    preset: str = "symmetric",
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    overrides: Mapping[str, str | Mapping[str, Any]] | None = None,
    mapping: Mapping[str, Mapped] | None = None,
    batched: bool = True,
    schedule_free: Mapping[str, float] | None = None,
    shard: bool = False,
) -> SymOpt | ScheduleFree:
    """The optimizer of `preset` for `model`, as a user would build a torch.optim optimizer.

    lr: the base lr (hidden matrices; AdamW's lr for "adamw"); every class scales with it.
    weight_decay: decoupled decay of hidden matrices (of all 2-D parameters for "adamw").
    overrides: {class or alias: rule name | {rule, lr, lr_mult, lr_scale, momentum, weight_decay, ...}};
        lr is absolute, lr_mult × the base lr, lr_scale × the class's lr without it (its default).
    mapping: {fnmatch pattern of parameter names: class or (class, layout)} for parameters the
        classifier does not know.
    schedule_free: ScheduleFree arguments (momentum, weight_lr_power, r, weight_decay_at_y) over
        the preset's, for schedule-free presets.
    shard: under data parallelism (torch.distributed initialized, the same gradients on every
        rank), split the whole-matrix directions across the ranks and all-gather them.
    """
    chosen = get_preset(preset)
    groups = param_groups(
        model, preset, lr=lr, weight_decay=weight_decay, overrides=overrides, mapping=mapping
    )
    optimizer = SymOpt(groups, lr=chosen.lr, batched=batched, shard=shard)
    if chosen.schedule_free is not None:
        return ScheduleFree(optimizer, **{**chosen.schedule_free, **(schedule_free or {})})
    if schedule_free:
        raise ConfigError(f"schedule_free settings given, but preset {preset!r} is not schedule-free")
    return optimizer
