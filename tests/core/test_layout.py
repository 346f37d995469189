"""Layouts: stored tensors <-> batches of logical (out, in) matrices."""

from __future__ import annotations

import pytest
import torch

from symopt_core.errors import ConfigError
from symopt_core.optim.layout import parse_layout

CASES = [
    ("matrix", (6, 4)),
    ("matrix", (3, 6, 4)),
    ("matrix.t", (3, 4, 6)),
    ("heads_rows.2", (8, 5)),
    ("heads_cols.2", (5, 8)),
    ("gate_up.concat", (3, 8, 5)),
    ("gate_up.interleave.t", (3, 5, 8)),
]


@pytest.mark.parametrize(("spec", "shape"), CASES)
@pytest.mark.parametrize("view", ["split", "paired"])
def test_round_trip(spec, shape, view):
    layout = parse_layout(spec)
    x = torch.randn(shape)
    matrices = layout.to_matrices(x, view)
    assert matrices.ndim == 3
    torch.testing.assert_close(layout.from_matrices(matrices, shape, view), x, rtol=0, atol=0)
    assert parse_layout(layout.spec) == layout


def test_heads_split_rows_and_columns_per_head():
    W = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3)  # 2 heads of 2 rows
    heads = parse_layout("heads_rows.2").to_matrices(W)
    torch.testing.assert_close(heads, torch.stack([W[:2], W[2:]]))
    O = W.mT.contiguous()  # [3, 4]: columns are 2 heads of 2
    blocks = parse_layout("heads_cols.2").to_matrices(O)
    torch.testing.assert_close(blocks, torch.stack([O[:, :2], O[:, 2:]]))


def test_expert_layouts_follow_the_models():
    E, r, d = 2, 3, 4
    gate, up = torch.randn(E, r, d), torch.randn(E, r, d)
    olmoe = torch.cat([gate, up], dim=1)  # [E, 2r, d], gate rows first
    gpt_oss = torch.stack([gate, up], dim=2).reshape(E, 2 * r, d).mT.contiguous()  # [E, d, 2r], interleaved
    for spec, stored in (("gate_up.concat", olmoe), ("gate_up.interleave.t", gpt_oss)):
        layout = parse_layout(spec)
        split = layout.to_matrices(stored, "split")
        torch.testing.assert_close(split, torch.stack([gate, up], dim=1).reshape(2 * E, r, d))
        paired = layout.to_matrices(stored, "paired")
        torch.testing.assert_close(paired, torch.cat([gate, up], dim=-1))  # row j = [gate_j, up_j]
    # gpt-oss really interleaves: gate is stored[..., ::2]
    torch.testing.assert_close(gpt_oss[..., ::2], gate.mT)


@pytest.mark.parametrize(
    "spec", ["matrix.x", "heads_rows", "heads_rows.0", "gate_up.zip", "vector.t", "tensor"]
)
def test_bad_specs_are_config_errors(spec):
    with pytest.raises(ConfigError, match="Invalid layout"):
        parse_layout(spec)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [("heads_rows.3", (8, 5)), ("heads_cols.3", (5, 8)), ("gate_up.concat", (2, 7, 5)), ("matrix", (5,))],
)
def test_shapes_that_do_not_fit_are_rejected(spec, shape):
    with pytest.raises(ConfigError, match=spec.replace(".", "\\.")):
        parse_layout(spec).check(shape)
