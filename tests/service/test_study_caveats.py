"""A study's caveats (issue 27, item 2): a verdict resting on tuning that never left the sampler's
start-up, on a tuned lr at the edge of its range, or on too few seeds says so, with what to
change; a well-founded one carries none."""

from __future__ import annotations

import math

from scipy import stats as scipy_stats

from service.store.models import Sweep
from service.studies.caveats import caveats, seeds_to_resolve
from service.studies.stats import paired_difference
from service.study_spec import StudySpec

from .conftest import TINY_JOB

LR_RANGE = {"type": "log_uniform", "low": 1e-3, "high": 1e-1}


def study(n_trials: int, sampler: str = "tpe") -> StudySpec:
    tuning = {"n_trials": n_trials, "sampler": sampler, "search_space": {"optimizer.lr": LR_RANGE}}
    return StudySpec.model_validate(
        {"base": TINY_JOB, "candidates": ["adamw", "muon"], "tuning": tuning, "seeds": 3}
    )


def sweeps() -> dict[str, Sweep]:
    return {name: Sweep(resolved_space={"default": {"optimizer.lr": LR_RANGE}}) for name in ("adamw", "muon")}


def tuned(lr: float, completed: int) -> dict[str, object]:
    return {"job_id": "j", "params": {"optimizer.lr": lr}, "objective": 3.0, "trials_completed": completed}


def comparison(differences: list[float]) -> dict[str, object]:
    by_seed = {seed: (3.0 + d, 3.0) for seed, d in enumerate(differences)}
    return paired_difference("muon", "adamw", by_seed).to_dict()


def test_tuning_inside_the_start_up_and_an_lr_at_an_edge_are_named():
    found = caveats(
        study(n_trials=2),
        sweeps(),
        {"adamw": tuned(1e-2, completed=2), "muon": tuned(0.095, completed=2)},
        [comparison([-0.01, 0.02, -0.005])],
    )
    start_up = [c for c in found if "random start-up" in c]
    assert [c.split(":")[0] for c in start_up] == ["adamw", "muon"]
    assert "tuning ran 2 trial(s), all inside the tpe sampler's 2 random start-up trials" in start_up[0]
    edges = [c for c in found if "edge" in c]
    assert edges == [
        "muon: its tuned optimizer.lr = 0.095 lies at the upper edge of the searched range [0.001, 0.1]; "
        "the optimum may lie beyond it: widen the range on that side"
    ]
    (unresolved,) = [c for c in found if "not resolved" in c]
    assert unresolved.startswith("muon vs adamw: not resolved at k = 3")


def test_a_well_founded_verdict_has_no_caveats():
    consistent = comparison([-0.05, -0.052, -0.049, -0.051, -0.05])  # called: muon better
    assert "better than" in consistent["verdict"]
    found = caveats(
        study(n_trials=32),
        sweeps(),
        {"adamw": tuned(1e-2, completed=32), "muon": tuned(2e-2, completed=31)},
        [consistent],
    )
    assert found == []


def test_random_search_has_no_start_up_caveat():
    found = caveats(study(n_trials=2, sampler="random"), sweeps(), {"adamw": tuned(1e-2, 2)}, [])
    assert found == []


def test_seeds_to_resolve_is_the_smallest_k_whose_t_interval_excludes_zero():
    mean, std = 0.01, 0.02
    k = seeds_to_resolve(mean, std)
    assert k is not None

    def half_width(n: int) -> float:
        return float(scipy_stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)

    assert half_width(k) < mean <= half_width(k - 1)
    assert seeds_to_resolve(0.0, 0.02) is None
    assert seeds_to_resolve(0.01, 0.0) == 2
