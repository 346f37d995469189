"""Search spaces: the `auto` rule on the reference sizes, trial specs at equal token budget, grids."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from service.sweeps.space import CRITICAL_BATCH_C, auto_search_space, grid, token_budget, trial_spec
from symopt_core.spec import load_spec
from symopt_core.sweep_spec import ParamRange

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_critical_batch_constant_is_the_nanogpt_reference():
    nanogpt = load_spec(EXAMPLES / "shakespeare_char_cpu.yaml")
    assert token_budget(nanogpt) == 2000 * 12 * 64
    assert CRITICAL_BATCH_C * token_budget(nanogpt) ** (2 / 3) / 64 == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("example", "preset", "lr_inside", "batch_inside"),
    [
        ("shakespeare_char_cpu.yaml", "adamw", 1e-3, 12),  # nanoGPT's own recipe lies inside
        ("shakespeare_char_cpu.yaml", "muon", 0.02, 12),  # KJ's Muon default
        ("shakespeare_char_cpu.yaml", "symmetric", 0.02, 12),
        ("shakespeare_char_gpu.yaml", "adamw", 1e-3, 64),
        ("qwen3_0.6b_gpu.yaml", "symmetric", 0.02, 224),  # EO's Qwen3 recipe: 8 x 28 sequences of 1024
        ("qwen3_0.6b_gpu.yaml", "adamw", 1e-3, 64),
    ],
)
def test_auto_space_brackets_the_known_good_settings(example, preset, lr_inside, batch_inside):
    space = auto_search_space(load_spec(EXAMPLES / example), preset)
    lr, batch = space["optimizer.lr"], space["batch.size"]
    assert lr.type == "log_uniform"
    assert lr.low < lr_inside < lr.high
    assert lr.high / lr.low == pytest.approx(64)  # a factor of 8 either way
    assert batch.type == "pow2"
    assert batch.low <= batch_inside <= batch.high
    assert 8 <= batch.high / batch.low <= 32
    assert math.log2(batch.low).is_integer()


def test_adamw_center_shrinks_with_width_and_matrix_presets_do_not():
    narrow = load_spec({"model": {"family": "gpt2", "d_model": 128, "n_heads": 4}})
    wide = load_spec({"model": {"family": "gpt2", "d_model": 1024, "n_heads": 8}})
    assert (
        auto_search_space(wide, "adamw")["optimizer.lr"].high
        < auto_search_space(narrow, "adamw")["optimizer.lr"].high
    )
    assert (
        auto_search_space(wide, "muon")["optimizer.lr"] == auto_search_space(narrow, "muon")["optimizer.lr"]
    )


def test_trial_spec_keeps_the_token_budget_when_the_batch_changes():
    base = load_spec(EXAMPLES / "shakespeare_char_cpu.yaml")
    trial = trial_spec(base, {"batch.size": 48, "optimizer.lr": 3e-3}, None)
    assert token_budget(trial) == token_budget(base) == 48 * 500 * 64
    assert (trial.steps, trial.schedule.warmup_steps, trial.eval.every) == (500, 25, 62)
    assert trial.optimizer.lr == 3e-3
    compared = trial_spec(base, {"batch.size": 12}, "symmetric")
    assert compared.optimizer.preset == "symmetric"
    assert compared.optimizer.lr is None  # the preset's own default, not adamw's 1e-3


def test_grid_points_cover_each_dimension():
    space = {
        "optimizer.lr": ParamRange(type="log_uniform", low=1e-4, high=1e-1),
        "batch.size": ParamRange(type="pow2", low=8, high=32),
    }
    points = grid(space, n_trials=12)
    assert points["batch.size"] == [8, 16, 32]
    assert len(points["optimizer.lr"]) == 4
    assert points["optimizer.lr"][0] == pytest.approx(1e-4)
    assert points["optimizer.lr"][-1] == pytest.approx(1e-1)
    assert grid({"optimizer.lr": space["optimizer.lr"]}, 6)["optimizer.lr"][1] == pytest.approx(10**-3.4)
