"""StudySpec: candidates, seeds, baseline and the per-candidate sweep each one gets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.study_spec import StudySpec

BASE = {
    "model": {"family": "qwen3", "size": "tiny"},
    "optimizer": {"weight_decay": 0.1, "lr": 0.5, "overrides": {"all": {"betas": [0.9, 0.99]}}},
    "seed": 5,
}


def study(**changes: object) -> StudySpec:
    return StudySpec.model_validate({"base": BASE, "candidates": ["adamw", "muon"], **changes})


def test_preset_names_inherit_the_base_optimizer_settings_but_not_its_lr():
    spec = study()
    muon = spec.candidate("muon").optimizer
    assert (muon.preset, muon.lr, muon.weight_decay) == ("muon", None, 0.1)
    assert spec.sweep_spec(spec.candidate("muon")).base.optimizer == muon
    explicit = study(candidates=["adamw", {"name": "mine", "optimizer": {"preset": "normuon"}}])
    assert explicit.candidate("mine").optimizer.weight_decay is None  # a mapping is used as given


def test_every_candidate_gets_the_same_tuning_budget():
    spec = study(tuning={"n_trials": 5, "sampler": "random", "pruner": "hyperband", "seed": 3})
    sweeps = [spec.sweep_spec(c) for c in spec.candidates]
    assert {(s.n_trials, s.sampler, s.pruner, s.seed, s.objective) for s in sweeps} == {
        (5, "random", "hyperband", 3, "best_val_loss")
    }
    assert [s.name for s in sweeps] == ["study-adamw", "study-muon"]


def test_seeds_are_fresh_by_default_and_checked():
    assert study().confirmation_seeds == [6, 7, 8]
    assert study(seeds=2).confirmation_seeds == [6, 7]
    assert study(seeds=[10, 11]).confirmation_seeds == [10, 11]
    for seeds, message in (
        (0, "give k from 1 to 64"),
        ([1, 1], "seeds must be distinct"),
        ([5, 6], r"must not include base.seed \(5\)"),
    ):
        with pytest.raises(ValidationError, match=message):
            study(seeds=seeds)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"candidates": ["adamw", "adamw"]}, "candidate names must be unique; repeated: adamw"),
        ({"candidates": ["adamw"]}, "at least 2 items"),
        ({"baseline": "lion"}, "baseline 'lion' is not a candidate; candidates: adamw, muon"),
        ({"candidates": ["adamw", "lion"]}, "unknown preset 'lion'"),
        ({"candidates": ["adamw", {"name": "a b", "optimizer": {}}]}, "invalid candidate name 'a b'"),
        ({"objective": "tokens_to_target"}, "needs target_loss"),
        (
            {"tuning": {"search_space": {"optimizer.nope": {"type": "uniform", "low": 0, "high": 1}}}},
            r"search_space\['optimizer.nope'\]",
        ),
    ],
)
def test_bad_studies_are_errors_that_say_what_to_fix(changes, message):
    with pytest.raises(ValidationError, match=message):
        study(**changes)
