"""The param-group options of SymOpt, in one table: default, the values it takes, who reads it.

Everything that names an option reads it from `GROUP_OPTIONS`: SymOpt takes its defaults from it
and validates every group against it, a job spec's `OverrideSpec` is generated from it (types,
bounds, choices, descriptions), presets accept the override keys it marks, and the service's
catalog lists each rule's options from it. Adding an option is one row here, plus the code that
reads it in the step.

The group's `rule` is not a row: it names a registry entry (rules.py), validated there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import ConfigError
from ..linalg import INVSQRT_METHODS, POLAR_METHODS
from .directions import HYBRID_POLAR_METHODS
from .rules import Rule, get_rule

__all__ = [
    "DEFAULT_LR",
    "GROUP_OPTIONS",
    "POLAR_DTYPES",
    "REMOVED_OPTIONS",
    "SCALES",
    "Choices",
    "Flag",
    "GroupOption",
    "Pair",
    "Range",
    "Reader",
    "group_defaults",
    "options_read_by",
    "readers_of",
    "upgrade_saved_group",
    "validate_options",
]

DEFAULT_LR = 0.02  # the KJ Muon default

# Shape scale applied to each matrix's direction (ALGORITHMS.md 8.3):
#   "kj": per-entry RMS 1/√fan_in, i.e. Keller Jordan's √max(1, m/n) for polar rules (a paired
#         [gate_j, up_j] view's fan-in is n/2: each half reads the n/2 inputs)
#   "match_rms_adamw": per-entry RMS rms_target (0.2: Moonlight's 0.2·√max(m, n) for polar rules)
#   "rms": the direction rescaled to RMS rms_target exactly (NorMuon paper form)
#   "none": the direction as the rule returns it
#   "kj_transposed": per-entry RMS 1/√fan_out, i.e. √max(1, n/m) for polar rules: KJ's factor of
#         the block read as (in, out), as EO's expert Muon scales the blocks it orients so
#         (ALGORITHMS.md 1; presets' eo_parity)
SCALES = ("kj", "match_rms_adamw", "rms", "none", "kj_transposed")
POLAR_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}

# What reads an option in SymOpt.step: AdamW's own update, momentum SGD (the other elementwise
# rule), every matrix rule (momentum -> layout -> direction -> scale -> decay), or only the rules
# with NorMuon's row normalization after the direction (Rule.neuron_norm).
Reader = Literal["adamw", "sgd", "matrix", "neuron_norm"]
_ALL: frozenset[Reader] = frozenset({"adamw", "sgd", "matrix"})
_SGD_MATRIX: frozenset[Reader] = frozenset({"sgd", "matrix"})
_MATRIX: frozenset[Reader] = frozenset({"matrix"})
_NEURON_NORM: frozenset[Reader] = frozenset({"neuron_norm"})
_ADAMW: frozenset[Reader] = frozenset({"adamw"})


@dataclass(frozen=True)
class Range:
    """Numbers (not bools; integers when `integer`) from low to high; an open end excludes its bound."""

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int if self.integer else int | float) or isinstance(value, bool):
            return False
        above = self.low < value if self.open_low else self.low <= value
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"

    def checked(self, key: str, value: Any) -> Any:
        if value not in self:
            kind = "an integer" if self.integer else "a number"
            raise ConfigError(f"Invalid {key}: {value!r} (expected {kind} in {self})")
        return value


@dataclass(frozen=True)
class Choices:
    """One of a fixed set of names."""

    values: tuple[str, ...]

    def checked(self, key: str, value: Any) -> Any:
        if value not in self.values:
            raise ConfigError(f"Invalid {key}: {value!r}; valid values: {', '.join(self.values)}")
        return value


@dataclass(frozen=True)
class Flag:
    """True or False."""

    def checked(self, key: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ConfigError(f"Invalid {key}: {value!r} (expected True or False)")
        return value


@dataclass(frozen=True)
class Pair:
    """Two numbers, each in `each` (AdamW's betas); a list becomes a tuple."""

    each: Range

    def checked(self, key: str, value: Any) -> Any:
        if not (isinstance(value, tuple | list) and len(value) == 2 and all(v in self.each for v in value)):
            raise ConfigError(f"Invalid {key}: {value!r} (expected two numbers in {self.each})")
        return tuple(value)


Values = Range | Choices | Flag | Pair


@dataclass(frozen=True)
class GroupOption:
    name: str
    default: Any
    # The values it takes; None: checked where it is read (layout: per parameter, parse_layout).
    values: Values | None
    reads: frozenset[Reader]
    doc: str
    # Whether a spec's `optimizer.overrides.<class>` may set it: lr has its own keys there (lr,
    # lr_mult, lr_scale) and a class's layout is the classifier's.
    override: bool = True
    # What a checkpoint saved before the option existed was trained with, when not the default.
    before: Any = None

    def checked(self, value: Any) -> Any:
        return value if self.values is None else self.values.checked(self.name, value)


_UNIT = Range(0.0, 1.0, open_high=True)
_STEPS = Range(1, 100, open_high=True, integer=True)

GROUP_OPTIONS: dict[str, GroupOption] = {
    option.name: option
    for option in (
        GroupOption("lr", DEFAULT_LR, Range(0.0), _ALL, "step size (presets: a share of the base lr)",
                    override=False),
        GroupOption("momentum", 0.95, _UNIT, _SGD_MATRIX, "EMA coefficient μ of the momentum buffer M"),
        GroupOption("nesterov", False, Flag(), _SGD_MATRIX, "step along g + μM instead of M"),
        GroupOption("weight_decay", 0.0, Range(0.0), _ALL, "decoupled: p <- (1 - lr·wd) p before the step"),
        GroupOption("layout", "auto", None, _MATRIX, "how a tensor is read as (out, in) matrices (layout.py)",
                    override=False),
        GroupOption("scale", "kj", Choices(SCALES), _MATRIX, "shape scale of the direction (SCALES)"),
        GroupOption("rms_target", 0.2, Range(0.0, open_low=True), _MATRIX,
                    "per-entry RMS of scales match_rms_adamw and rms"),
        GroupOption("alpha", 0.0, Range(0.0), _MATRIX, "PolarGrad exponent: ‖M‖_*^α · direction (0: Muon)"),
        GroupOption("eps", 1e-8, Range(0.0), _MATRIX, "floor of row and column norms"),
        GroupOption("polar_method", "polar_express", Choices(POLAR_METHODS), _MATRIX,
                    "how polar(M) is computed"),
        GroupOption("polar_steps", 5, _STEPS, _MATRIX, "iterations of an iterative polar_method"),
        GroupOption("polar_dtype", "auto", Choices(("auto", *POLAR_DTYPES)), _MATRIX,
                    "dtype of the polar iteration (auto: bfloat16 on CUDA, float32 on CPU)"),
        GroupOption("invsqrt_method", "polar_express", Choices(INVSQRT_METHODS), _MATRIX,
                    "how the Gram's inverse square root is computed (one-sided spectral, hybrids)"),
        GroupOption("invsqrt_steps", 5, _STEPS, _MATRIX, "iterations of an iterative invsqrt_method"),
        GroupOption("gram_eps", 1e-8, Range(0.0), _MATRIX, "ridge of the Gram, relative to ‖M‖_F²"),
        GroupOption("hybrid_polar", "invsqrt", Choices(HYBRID_POLAR_METHODS), _MATRIX,
                    "how the hybrids take polar(X)", before="polar"),
        GroupOption("beta2", 0.95, _UNIT, _NEURON_NORM, "EMA coefficient of NorMuon's per-row mean square"),
        GroupOption("normuon_eps", 1e-10, Range(0.0), _NEURON_NORM, "floor of NorMuon's row RMS"),
        GroupOption("betas", (0.9, 0.95), Pair(_UNIT), _ADAMW, "AdamW's (β1, β2)"),
        GroupOption("adam_eps", 1e-8, Range(0.0), _ADAMW, "AdamW's ε"),
    )
}  # fmt: skip

# Options that no longer exist, and what replaces them. NorMuon is one rule, "normuon" (polar,
# then the row normalization), whose registry entry states its symmetry (S_m × O(n)); a flag on
# "polar" left polar's O(m) × O(n) claim wrong, and on other rules it made unnamed hybrids.
REMOVED_OPTIONS: dict[str, str] = {
    "normuon": 'NorMuon is the rule "normuon": give rule="normuon" instead of normuon=True',
}


def readers_of(rule: Rule) -> frozenset[Reader]:
    """Which `reads` entries cover `rule`."""
    if rule.name == "adamw":
        return _ADAMW
    if rule.elementwise:
        return frozenset({"sgd"})
    return _MATRIX | _NEURON_NORM if rule.neuron_norm else _MATRIX


def options_read_by(rule: Rule) -> dict[str, GroupOption]:
    """The options `rule`'s step reads, in the table's order."""
    readers = readers_of(rule)
    return {name: option for name, option in GROUP_OPTIONS.items() if option.reads & readers}


def group_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option's default, with `given` over them (SymOpt's keyword arguments)."""
    check_removed(given)
    unknown = set(given) - set(GROUP_OPTIONS)
    if unknown:
        valid = ", ".join(["rule", *GROUP_OPTIONS])
        raise ConfigError(f"Invalid option(s): {', '.join(sorted(unknown))}; valid options: {valid}")
    return {name: given.get(name, option.default) for name, option in GROUP_OPTIONS.items()}


def check_removed(options: Mapping[str, Any]) -> None:
    for key, replacement in REMOVED_OPTIONS.items():
        if key in options:
            raise ConfigError(f"Invalid option {key}: {options[key]!r} (removed; {replacement})")


def validate_options(group: MutableMapping[str, Any]) -> None:
    """Each option of `group` against the table: a ConfigError names the first bad value."""
    check_removed(group)
    for name, option in GROUP_OPTIONS.items():
        group[name] = option.checked(group[name])


def upgrade_saved_group(group: MutableMapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """A group (or `defaults`) saved by an earlier SymOpt, as this one runs it: an option it lacks
    gets the value it was trained with (`before`), else the default; `normuon=True` becomes the
    rule it always equalled ("polar" + the flag is "normuon"), and a False flag is dropped."""
    for name, option in GROUP_OPTIONS.items():
        if name not in group:
            group[name] = option.before if option.before is not None else defaults.get(name, option.default)
    if group.pop("normuon", False):
        rule = group.get("rule", "polar")
        if rule == "polar":
            group["rule"] = "normuon"
        elif not get_rule(rule).neuron_norm:
            raise ConfigError(
                f"This checkpoint runs rule {rule!r} with normuon=True, which no longer exists "
                f"({REMOVED_OPTIONS['normuon']}); resume it with the SymOpt version that wrote it"
            )
