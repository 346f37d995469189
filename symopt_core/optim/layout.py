"""How a stored parameter tensor maps to a batch of logical (out, in) matrices, and back.

A layout is written as a short string so that it can live in a param group (and so in a
`state_dict`, which `torch.load(weights_only=True)` must be able to read):

  "vector"                 1-D parameters (norms, biases): elementwise rules only
  "matrix"                 [..., out, in]: one matrix per leading index (expert stacks [E, out, in])
  "matrix.t"               [..., in, out]: stored transposed (gpt-oss experts)
  "heads_rows.<hd>"        [H·hd, d]: q/k/v projections, one [hd, d] block per head
  "heads_cols.<hd>"        [d, H·hd]: attention output projection, one [d, hd] block per head
  "gate_up.concat"         [..., 2r, d]: gate rows then up rows (OLMoE, Qwen3-MoE experts)
  "gate_up.interleave.t"   [..., d, 2r] stored (in, out), gate in even and up in odd outputs (gpt-oss)

Fused gate/up tensors have two views: "split" gives gate and up as separate [r, d] matrices
(what the polar rules orthogonalize, like separate dense projections) and "paired" gives one
[r, 2d] matrix whose row j is [gate_j, up_j] (the paired row-norm of ALGORITHMS.md 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from torch import Tensor

from ..errors import ConfigError

__all__ = ["Layout", "View", "parse_layout"]

View = Literal["split", "paired"]
_KINDS = ("vector", "matrix", "heads_rows", "heads_cols", "gate_up")


@dataclass(frozen=True)
class Layout:
    kind: Literal["vector", "matrix", "heads_rows", "heads_cols", "gate_up"]
    transposed: bool = False
    head_dim: int = 0
    fused: Literal["", "concat", "interleave"] = ""

    @property
    def spec(self) -> str:
        parts: list[str] = [self.kind]
        if self.head_dim:
            parts.append(str(self.head_dim))
        if self.fused:
            parts.append(self.fused)
        if self.transposed:
            parts.append("t")
        return ".".join(parts)

    def check(self, shape: tuple[int, ...], name: str = "parameter") -> None:
        """Raise a ConfigError naming `name` if a tensor of `shape` cannot have this layout."""
        if self.kind == "vector":
            return
        if len(shape) < 2:
            raise ConfigError(f"Invalid layout {self.spec!r} for {name} of shape {shape}: it needs 2+ dims")
        out, inp = self._logical(shape)
        if self.kind == "heads_rows" and out % self.head_dim:
            raise ConfigError(f"Invalid layout {self.spec!r} for {name}: {out} rows are not whole heads")
        if self.kind == "heads_cols" and inp % self.head_dim:
            raise ConfigError(f"Invalid layout {self.spec!r} for {name}: {inp} columns are not whole heads")
        if self.kind == "gate_up" and out % 2:
            raise ConfigError(f"Invalid layout {self.spec!r} for {name}: {out} outputs cannot split in two")

    def _logical(self, shape: tuple[int, ...]) -> tuple[int, int]:
        out, inp = shape[-2], shape[-1]
        return (inp, out) if self.transposed else (out, inp)

    def to_matrices(self, x: Tensor, view: View = "split") -> Tensor:
        """The batch [B, m, n] of logical matrices of `x` (a copy where a reshape needs one)."""
        if self.kind == "vector":
            raise ConfigError("a vector parameter has no matrix view; use an elementwise rule (adamw, sgd)")
        logical = x.mT if self.transposed else x
        *_, out, inp = logical.shape
        if self.kind == "matrix":
            return logical.reshape(-1, out, inp)
        if self.kind == "heads_rows":
            return logical.reshape(-1, self.head_dim, inp)
        if self.kind == "heads_cols":
            heads = inp // self.head_dim
            blocks = logical.reshape(-1, out, heads, self.head_dim).permute(0, 2, 1, 3)
            return blocks.reshape(-1, out, self.head_dim)
        r = out // 2
        halves = self._halves(logical.reshape(-1, out, inp), r)  # [E, 2, r, d]: gate, up
        if view == "paired":
            return halves.permute(0, 2, 1, 3).reshape(-1, r, 2 * inp)
        return halves.reshape(-1, r, inp)

    def from_matrices(self, D: Tensor, shape: tuple[int, ...], view: View = "split") -> Tensor:
        """Inverse of `to_matrices`: a tensor of the stored `shape` (and memory order)."""
        out, inp = self._logical(shape)
        logical_shape = (*shape[:-2], out, inp)
        if self.kind in ("matrix", "heads_rows"):
            logical = D.reshape(logical_shape)
        elif self.kind == "heads_cols":
            heads = inp // self.head_dim
            blocks = D.reshape(-1, heads, out, self.head_dim).permute(0, 2, 1, 3)
            logical = blocks.reshape(logical_shape)
        else:
            r = out // 2
            if view == "paired":
                halves = D.reshape(-1, r, 2, inp).permute(0, 2, 1, 3)
            else:
                halves = D.reshape(-1, 2, r, inp)
            logical = self._join(halves, r).reshape(logical_shape)
        return logical.mT if self.transposed else logical

    def _halves(self, M: Tensor, r: int) -> Tensor:
        # [E, 2r, d] -> [E, 2, r, d] with index 0 the gate rows and 1 the up rows.
        if self.fused == "concat":
            return M.reshape(-1, 2, r, M.shape[-1])
        return M.reshape(-1, r, 2, M.shape[-1]).transpose(1, 2)

    def _join(self, halves: Tensor, r: int) -> Tensor:
        if self.fused == "concat":
            return halves.reshape(-1, 2 * r, halves.shape[-1])
        return halves.transpose(1, 2).reshape(-1, 2 * r, halves.shape[-1])


@lru_cache(maxsize=256)
def parse_layout(spec: str) -> Layout:
    """Parse a layout string (see the module docstring); a ConfigError says what is accepted."""
    parts = spec.split(".")
    transposed = parts[-1] == "t"
    if transposed:
        parts = parts[:-1]
    kind, *rest = parts
    error = ConfigError(
        f"Invalid layout: {spec!r}; expected one of vector, matrix[.t], heads_rows.<head_dim>, "
        "heads_cols.<head_dim>, gate_up.concat[.t], gate_up.interleave[.t]"
    )
    if kind not in _KINDS:
        raise error
    if kind in ("vector", "matrix"):
        if rest or (transposed and kind == "vector"):
            raise error
        return Layout(kind, transposed)  # type: ignore[arg-type]
    if kind in ("heads_rows", "heads_cols"):
        if len(rest) != 1 or not rest[0].isdigit() or int(rest[0]) < 1:
            raise error
        return Layout(kind, transposed, head_dim=int(rest[0]))  # type: ignore[arg-type]
    if rest not in (["concat"], ["interleave"]):
        raise error
    return Layout("gate_up", transposed, fused=rest[0])  # type: ignore[arg-type]
