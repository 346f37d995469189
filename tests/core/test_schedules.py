"""LR schedules as pure functions: each kind against its closed form at chosen steps."""

from __future__ import annotations

import math
from typing import Any

import pytest

from symopt_core.schedules import lr_multiplier


def at(steps: list[int], **schedule: Any) -> list[float]:
    return [lr_multiplier(step, **schedule) for step in steps]


def test_warmup_is_linear_to_one_then_the_schedule_takes_over():
    # nanoGPT's warmup: (step + 1) / (warmup + 1) for the first `warmup` steps.
    assert at([0, 1, 2, 3, 4, 50], kind="constant", total_steps=100, warmup_steps=4) == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    )


def test_constant_is_one_throughout():
    assert at([0, 1, 50, 99, 100], kind="constant", total_steps=100) == [1.0] * 5


def test_cosine_decays_from_one_to_the_min_ratio_after_warmup():
    # 110 steps, 10 of warmup: progress p = (step - 10) / 100, lr = 0.1 + 0.45 (1 + cos πp).
    values = at([10, 35, 60, 85, 110, 500], kind="cosine", total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    expected = [1.0, 0.1 + 0.45 * (1 + math.sqrt(0.5)), 0.55, 0.1 + 0.45 * (1 - math.sqrt(0.5)), 0.1, 0.1]
    assert values == pytest.approx(expected)
    assert lr_multiplier(9, kind="cosine", total_steps=110, warmup_steps=10) == pytest.approx(10 / 11)


def test_linear_decays_to_the_min_ratio():
    values = at([10, 35, 60, 110, 200], kind="linear", total_steps=110, warmup_steps=10, min_lr_ratio=0.2)
    assert values == pytest.approx([1.0, 0.8, 0.6, 0.2, 0.2])
    assert at([0, 50, 100], kind="linear", total_steps=100) == pytest.approx([1.0, 0.5, 0.0])


def test_wsd_is_stable_then_decays_linearly_over_the_last_fraction():
    # 100 steps, decay over the last 20%: 1 up to step 80, then 1 - (step - 80)/20 down to 0.
    values = at([5, 79, 80, 90, 95, 99, 100], kind="wsd", total_steps=100, warmup_steps=5, decay_frac=0.2)
    assert values == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.25, 0.05, 0.0])
    assert lr_multiplier(0, kind="wsd", total_steps=100, warmup_steps=5) == pytest.approx(1 / 6)
    assert lr_multiplier(90, kind="wsd", total_steps=100, decay_frac=0.2, min_lr_ratio=0.1) == pytest.approx(
        0.55
    )
    # EO's recipe (ALGORITHMS.md 14): constant, then linear to 0 over the last 40%, no warmup.
    assert at([0, 599, 600, 800, 1000], kind="wsd", total_steps=1000, decay_frac=0.4) == pytest.approx(
        [1.0, 1.0, 1.0, 0.5, 0.0]
    )


def test_schedule_free_has_no_schedule_beyond_warmup():
    # The averaging does the annealing: the lr never decays, however long the run.
    values = at(
        [0, 1, 2, 3, 1000, 10**6], kind="schedule_free", total_steps=100, warmup_steps=3, min_lr_ratio=0.1
    )
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_unknown_kind_names_the_value():
    with pytest.raises(ValueError, match="Invalid schedule kind: 'exponential'; valid kinds: constant"):
        lr_multiplier(50, kind="exponential", total_steps=100)
