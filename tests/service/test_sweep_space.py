"""Search spaces: the `auto` rule on the reference sizes (per-class step sizes included), trial
specs at equal token budget and with per-class lr scales, grids."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from service.sweep_spec import ParamRange
from service.sweeps.space import CRITICAL_BATCH_C, auto_search_space, grid, token_budget, trial_spec
from symopt_core.models.registry import build_model
from symopt_core.presets import param_groups
from symopt_core.spec import JobSpec, load_spec, set_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The study example's base job: nanoGPT's CPU GPT-2 (tied embedding, learned positions).
NANOGPT = yaml.safe_load((EXAMPLES / "studies" / "nanogpt_cpu.yaml").read_text())["base"]


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


def nanogpt(preset: str, **optimizer: object) -> JobSpec:
    return load_spec({**NANOGPT, "optimizer": {**NANOGPT["optimizer"], "preset": preset, **optimizer}})


def scale_path(param_class: str) -> str:
    return f"optimizer.overrides.{param_class}.lr_scale"


@pytest.mark.parametrize(
    ("preset", "classes"),
    [
        ("symmetric", ["tied_embedding", "position", "vector"]),  # row-norm embedding, AdamW elsewhere
        ("muon", ["tied_embedding", "position", "vector"]),  # every AdamW-run part
        ("adamw", []),  # one rule everywhere: nothing to scale apart
    ],
)
def test_per_class_lr_adds_a_scale_for_each_class_off_the_hidden_rule(preset, classes):
    base = nanogpt(preset)
    plain = auto_search_space(base, preset)
    space = auto_search_space(base, preset, per_class_lr=True)
    assert list(plain) == ["optimizer.lr", "batch.size"]  # off by default
    assert list(space) == [*plain, *(scale_path(c) for c in classes)]
    assert {path: space[path] for path in plain} == plain
    for c in classes:
        assert space[scale_path(c)] == ParamRange(type="log_uniform", low=0.25, high=4.0)


def test_per_class_lr_follows_the_model_and_the_base_overrides():
    untied = load_spec({"model": {"family": "qwen3", "size": "tiny"}, "optimizer": {"preset": "symmetric"}})
    scaled = [p for p in auto_search_space(untied, "symmetric", per_class_lr=True) if p.endswith("lr_scale")]
    assert scaled == [scale_path(c) for c in ("embedding", "lm_head", "vector")]  # an untied head
    moved = nanogpt("symmetric", overrides={"tied_embedding": "polar"})  # now on the hidden rule
    scaled = [p for p in auto_search_space(moved, "symmetric", per_class_lr=True) if p.endswith("lr_scale")]
    assert scaled == [scale_path("position"), scale_path("vector")]


def test_set_path_puts_lr_scale_beside_a_rule_name_and_keeps_existing_overrides():
    tree = {"optimizer": {"overrides": {"all": {"betas": [0.9, 0.99]}, "tied_embedding": "row_norm"}}}
    set_path(tree, scale_path("tied_embedding"), 0.5)  # a rule name becomes {"rule": name}
    set_path(tree, scale_path("vector"), 2.0)  # no override for the class yet
    set_path(tree, scale_path("all"), 1.5)  # merged into the existing mapping
    assert tree["optimizer"]["overrides"] == {
        "all": {"betas": [0.9, 0.99], "lr_scale": 1.5},
        "tied_embedding": {"rule": "row_norm", "lr_scale": 0.5},
        "vector": {"lr_scale": 2.0},
    }
    with pytest.raises(ValueError, match=r"'lr' holds 0\.1, not a mapping"):
        set_path({"optimizer": {"lr": 0.1}}, "optimizer.lr.low", 1)  # only overrides read a name so


def groups_by_class(spec: JobSpec) -> dict[str, float]:
    """Each class's lr in the optimizer the job builds (as the training loop calls param_groups)."""
    model = build_model(
        spec.model.family, spec.model.size, vocab_size=65, max_seq_len=spec.data.seq_len, **spec.model.dims
    )
    groups = param_groups(
        model,
        spec.optimizer.preset,
        lr=spec.optimizer.lr,
        weight_decay=spec.optimizer.weight_decay,
        overrides=spec.optimizer.override_options(),
    )
    return {g["param_class"]: g["lr"] for g in groups}


@pytest.mark.parametrize("embedding", [None, "row_norm"], ids=["no-override", "rule-name"])
def test_a_trial_with_lr_scales_builds_groups_at_the_default_lr_times_the_scale(embedding):
    overrides = {**NANOGPT["optimizer"]["overrides"], **({"tied_embedding": embedding} if embedding else {})}
    base = nanogpt("symmetric", overrides=overrides)
    scales = {"tied_embedding": 0.5, "position": 3.0, "vector": 0.25}
    params = {"optimizer.lr": 0.01, **{scale_path(c): v for c, v in scales.items()}}
    trial = trial_spec(base, params, None)
    assert trial.optimizer.overrides["all"].betas == (0.9, 0.99)  # the base's overrides are kept
    default = groups_by_class(trial_spec(base, {"optimizer.lr": 0.01}, None))
    assert groups_by_class(trial) == {c: lr * scales.get(c, 1.0) for c, lr in default.items()}
