"""The registry of update rules: name -> direction function, symmetry group, natural magnitude.

Param groups of `SymOpt` name their rule (`rule="row_norm"`); an unknown name is a ValueError
that lists the valid ones. Each rule declares the group its direction is equivariant under, and
the group elements it is *not* equivariant under (negative controls); the test suite checks both
for every rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ..errors import ConfigError
from . import directions as d

__all__ = ["RULES", "Communication", "Rule", "Symmetry", "get_rule"]

# "signed_permutation": permutations with sign flips, the group of elementwise rules (AdamW):
# m transforms with the signs, v = EMA(g²) only with the permutation, so m/√v transforms with both.
Action = Literal["orthogonal", "permutation", "signed_permutation"]
Property = Literal["rows_orthogonal", "cols_orthogonal", "shift"]
# What a rule needs from other ranks when its matrix's rows are split across them (FSDP-style), and
# so what the data-parallel step may split (ALGORITHMS.md; DESIGN.md's distributed step):
#   "none":          elementwise or row-local (AdamW, row-norm): each rank works on its own rows;
#   "column_reduce": one all-reduce of an n-vector per matrix (centered row-norm's column mean,
#                    col-norm's column norms);
#   "gather":        the whole matrix (polar, one-sided spectral, hybrid, NorMuon): one rank
#                    computes it and the result is all-gathered. Only these are worth splitting
#                    under data parallelism: their cost grows as m²n, the others' as mn.
Communication = Literal["none", "column_reduce", "gather"]
_GROUP_NAMES = {"orthogonal": "O({})", "permutation": "S_{}", "signed_permutation": "±S_{}"}


@dataclass(frozen=True)
class Symmetry:
    """The group acting on an m×n block G ↦ A G Bᵀ, and whether shifts G ↦ G + 1vᵀ are gauge.

    rows/cols: the action on the left (rows) and right (columns): O(m), S_m or ±S_m (signed).
    shift: D(G + 1vᵀ) = D(G) and 1ᵀD(G) = 0 (centered rules for LM heads and routers).
    breaks: properties the rule must NOT have (negative controls for the tests).
    """

    rows: Action
    cols: Action
    shift: bool = False
    breaks: tuple[Property, ...] = ()

    def __str__(self) -> str:
        left, right = _GROUP_NAMES[self.rows].format("m"), _GROUP_NAMES[self.cols].format("n")
        return f"{left} × {right}" + (" ⋉ shifts 1vᵀ" if self.shift else "")


def _polar_rms(m: int, n: int) -> float:
    # A full-rank polar factor of an m×n block has per-entry RMS 1/√max(m, n).
    return 1.0 / math.sqrt(max(m, n))


def _row_rms(m: int, n: int) -> float:
    return 1.0 / math.sqrt(n)


def _col_rms(m: int, n: int) -> float:
    return 1.0 / math.sqrt(m)


@dataclass(frozen=True)
class Rule:
    """An update rule: its direction, its group, and the per-entry RMS of a unit-scale direction."""

    name: str
    summary: str
    symmetry: Symmetry
    direction: Callable[[Tensor, d.DirectionOptions], Tensor] | None = None  # None: adamw
    natural_rms: Callable[[int, int], float] | None = None  # None: magnitude follows the gradient
    view: Literal["split", "paired"] = "split"  # "paired": fused gate/up rows joined [gate_j, up_j]
    transposable: bool = False  # D(Mᵀ) = D(M)ᵀ, so tall and wide blocks may share one batch
    neuron_norm: bool = False  # NorMuon's row second moment after the direction (stateful)
    elementwise: bool = False  # applied to the stored tensor as is, vectors included (adamw, sgd)
    communication: Communication = "gather"
    # Hybrids: with α ≠ 0 one nuclear scalar Σ_b ‖X_b‖_* per parameter tensor, summed over its
    # matrices (experts, fused halves) as EO does (ALGORITHMS.md 4): the direction must see one
    # tensor's matrices per call, never several tensors batched together.
    couples_stack: bool = False

    def fan_in(self, n: int) -> int:
        """The fan-in of the layer behind an m×n logical block: n, or n/2 for a paired view,
        whose rows [gate_j, up_j] join two halves that each read the same n/2 inputs."""
        return n // 2 if self.view == "paired" else n


_BI = Symmetry("orthogonal", "orthogonal", breaks=("shift",))
_ROW_AWARE = Symmetry("permutation", "orthogonal", breaks=("rows_orthogonal", "shift"))
_COL_AWARE = Symmetry("orthogonal", "permutation", breaks=("cols_orthogonal",))
_CENTERED = Symmetry("permutation", "orthogonal", shift=True, breaks=("rows_orthogonal",))

_RULES: tuple[Rule, ...] = (
    Rule("adamw", "AdamW (decoupled weight decay), for vectors and baselines",
         Symmetry("signed_permutation", "signed_permutation", breaks=("rows_orthogonal", "cols_orthogonal")),
         elementwise=True, communication="none"),
    Rule("sgd", "momentum SGD: D = M", Symmetry("orthogonal", "orthogonal", breaks=("shift",)),
         direction=d.identity, elementwise=True, communication="none"),
    Rule("polar", "Rule A, Muon / PolarGrad: ‖M‖_*^α polar(M), per head or per expert by layout",
         _BI, d.polar_direction, _polar_rms, transposable=True),
    Rule("normuon", "NorMuon: polar(M), then each row divided by √EMA(mean square)",
         Symmetry("permutation", "orthogonal", breaks=("rows_orthogonal",)), d.polar_direction,
         _polar_rms, transposable=True, neuron_norm=True),
    Rule("row_norm", "Rule B: each row to unit norm (embeddings; row-aware SwiGLU gate/up)",
         _ROW_AWARE, d.row_norm, _row_rms, communication="none"),
    Rule("col_norm", "column-aware row-norm: each column to unit norm (SwiGLU down)",
         _COL_AWARE, d.col_norm, _col_rms, communication="column_reduce"),
    Rule("paired_row_norm", "row-norm of [gate_j, up_j] jointly (fused gate/up tensors)",
         _ROW_AWARE, d.row_norm, _row_rms, view="paired", communication="none"),
    Rule("right_spectral", "Rule C: ‖M‖_*^α M (MᵀM + εI)^(-1/2), one-sided (embeddings, LM heads)",
         _BI, d.one_sided_spectral, _polar_rms),
    Rule("left_spectral", "‖M‖_*^α (MMᵀ + εI)^(-1/2) M: the same map as right_spectral (EO's left form)",
         _BI, d.one_sided_spectral, _polar_rms),
    Rule("hybrid", "Rule D, row_then_polar: ‖X‖_*^α polar(X), X = rownorm(M) (row-aware)",
         _ROW_AWARE, d.hybrid, _polar_rms, couples_stack=True),
    Rule("hybrid_polar_then_row", "Rule D, polar_then_row: rownorm(polar(M))",
         _ROW_AWARE, d.hybrid_polar_then_row, _row_rms, couples_stack=True),
    Rule("paired_hybrid", "hybrid on [gate_j, up_j] rows (fused gate/up tensors)",
         _ROW_AWARE, d.hybrid, _polar_rms, view="paired", couples_stack=True),
    Rule("col_hybrid", "column-aware hybrid: polar(colnorm(M)) (SwiGLU down)",
         _COL_AWARE, d.col_hybrid, _polar_rms, couples_stack=True),
    Rule("centered_row_norm", "Π rownorm(Π M): LM head, router (shift-invariant, horizontal)",
         _CENTERED, d.centered_row_norm, _row_rms, communication="column_reduce"),
    Rule("centered_right_spectral", "Π right_spectral(Π M): LM head",
         _CENTERED, d.centered_one_sided_spectral, _polar_rms),
    Rule("centered_left_spectral", "Π left_spectral(Π M) = polar(Π M) for α = 0: MoE router",
         _CENTERED, d.centered_one_sided_spectral, _polar_rms),
    Rule("centered_hybrid", "Π(‖X‖_*^α polar(X)), X = Π rownorm(Π M): LM head, router",
         _CENTERED, d.centered_hybrid, _polar_rms, couples_stack=True),
)  # fmt: skip

RULES: dict[str, Rule] = {rule.name: rule for rule in _RULES}


def get_rule(name: str) -> Rule:
    """The rule called `name`; a ConfigError (a ValueError) listing the valid names otherwise."""
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"Invalid rule: {name!r}; valid rules: {', '.join(RULES)}") from None
