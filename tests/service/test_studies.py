"""Comparison studies run by a real service: equal budgets, paired seeded runs, statistics that
a direct computation from the stored runs reproduces (against the baseline and between the other
candidates), no false winner, and a restart mid-study."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats as scipy_stats
from sqlalchemy import create_engine, text

from service.client import Client
from service.commands.study import render
from service.testing import live_service

from ..specs import tiny_job
from ..waiting import LIMIT, wait_for
from .live import Api

BASE = tiny_job(steps=30, log_every=10, eval={"every": 10, "batches": 2}, checkpoint={"every": 10})
TUNING = {
    "n_trials": 2,
    "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 2e-2}},
    "sampler": "grid",
    "pruner": "none",
    "parallelism": 2,
}


def rows(home: Path, query: str, **params: Any) -> list[Any]:
    engine = create_engine(f"sqlite:///{home / 'symopt.db'}")
    with engine.connect() as connection:
        found = list(connection.execute(text(query), params))
    engine.dispose()
    return found


def objectives(home: Path, study_id: str) -> dict[tuple[str, int], float]:
    """Each confirmation run's best val loss, straight from the jobs table."""
    found = rows(
        home,
        "SELECT study_candidate, study_seed, result FROM symopt_jobs "
        "WHERE study_id = :s AND study_seed IS NOT NULL",
        s=study_id,
    )
    return {(c, int(s)): float(json.loads(r)["best_val_loss"]) for c, s, r in found}


def check_paired(
    comparison: dict[str, Any], stored: dict[tuple[str, int], float], statistics: dict[str, Any]
) -> None:
    """A paired difference of the result against numpy and scipy on the stored objectives."""
    a, b = comparison["candidate"], comparison["baseline"]
    differences = np.array([stored[(a, s)] - stored[(b, s)] for s in (1, 2, 3)])
    assert comparison["seeds"] == [1, 2, 3]
    assert comparison["differences"] == pytest.approx(list(differences))
    rng = np.random.default_rng(statistics["seed"])
    means = differences[rng.integers(0, 3, size=(statistics["resamples"], 3))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert comparison["summary"]["bootstrap"] == {"low": pytest.approx(low), "high": pytest.approx(high)}
    width = scipy_stats.t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    assert comparison["summary"]["t"]["low"] == pytest.approx(differences.mean() - width)
    called = (low > 0 or high < 0) and abs(differences.mean()) > width
    assert ("not distinguishable" not in comparison["verdict"]) == called
    assert comparison["verdict"].startswith(f"{a} ")


def test_a_study_survives_a_restart_spends_equal_budgets_and_its_statistics_check_out(tmp_path: Path):
    names = ("adamw", "muon", "symmetric")
    spec = {"name": "trio", "base": BASE, "candidates": list(names), "tuning": TUNING, "seeds": 3}
    env = {"SYMOPT_RAY_NUM_CPUS": "2"}
    with live_service(tmp_path, env=env) as service:
        key = service.api_key
        with Client(service.url, key) as client:
            study = client.submit_study(spec)
            wait_for(
                lambda: study.refresh().data["progress"]["confirmation"]["finished"] >= 1,
                progress=lambda: json.dumps(study.data["progress"], sort_keys=True),
                what="the first confirmation run",
                every=0.2,
            )
            running = study.data["progress"]["confirmation"]
            assert study.stage == "confirming"
            assert running["finished"] < running["planned"] == 9  # killed in the middle of stage 2
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    time.sleep(2)
    with live_service(tmp_path, env=env) as restarted, Client(restarted.url, key) as client:
        study = client.study(study.id).wait(timeout=LIMIT, progress=False)
        assert study.status == "succeeded", study.data["error"]
        result = study.result
        assert result is not None

        # Exactly the planned runs: one per candidate and seed, the same seeds for both.
        runs = rows(
            tmp_path,
            "SELECT study_candidate, study_seed, count(*) FROM symopt_jobs "
            "WHERE study_id = :s AND study_seed IS NOT NULL GROUP BY study_candidate, study_seed",
            s=study.id,
        )
        assert sorted((c, s, n) for c, s, n in runs) == [(c, s, 1) for c in names for s in (1, 2, 3)]

        # Equal budgets: each candidate's sweep ran the same trials over the same space and pruner.
        sweeps = study.sweeps()
        assert set(sweeps) == set(names)
        for sweep in sweeps.values():
            assert sweep.data["spec"]["n_trials"] == 2
            assert sweep.data["spec"]["pruner"] == "none"
            assert sweep.data["search_space"] == {"default": TUNING["search_space"]}
        tokens = {
            name: rows(tmp_path, "SELECT sum(step) FROM symopt_jobs WHERE sweep_id = :s", s=sweep.id)[0][0]
            for name, sweep in sweeps.items()
        }
        assert tokens["adamw"] == tokens["muon"] == tokens["symmetric"] == 2 * 30

        # The confirmation runs re-ran each candidate's best trial, on fresh seeds.
        for candidate in result["candidates"]:
            best = client.job(candidate["tuned"]["job_id"])
            for run in client.study(study.id).runs()[candidate["name"]]:
                assert {**run.spec, "seed": 0, "name": ""} == {**best.spec, "seed": 0, "name": ""}
                assert run.spec["seed"] in (1, 2, 3)

        # The statistics, recomputed from the stored runs.
        stored = objectives(tmp_path, study.id)
        statistics = result["statistics"]
        for candidate in result["candidates"]:
            values = np.array([stored[(candidate["name"], seed)] for seed in (1, 2, 3)])
            summary = candidate["summary"]
            assert summary["mean"] == pytest.approx(values.mean())
            assert summary["std"] == pytest.approx(values.std(ddof=1))
        comparisons = result["comparisons"]
        assert [(c["candidate"], c["baseline"]) for c in comparisons] == [
            ("muon", "adamw"),
            ("symmetric", "adamw"),
        ]
        for comparison in comparisons:
            check_paired(comparison, stored, statistics)
        assert result["verdicts"] == [c["verdict"] for c in comparisons]

        # Between the other candidates: muon vs symmetric, in the order they are listed.
        (pairwise,) = result["pairwise"]
        assert (pairwise["candidate"], pairwise["baseline"]) == ("muon", "symmetric")
        check_paired(pairwise, stored, statistics)
        assert result["pairwise_verdicts"] == [pairwise["verdict"]]
        shown = "\n".join(render(study.data))  # what `symopt study show` prints
        assert all(c["verdict"] in shown for c in [*comparisons, pairwise])
        assert shown.index(comparisons[-1]["verdict"]) < shown.index(pairwise["verdict"])
        assert study.caveats == result["caveats"]  # what the verdicts rest on, shown beside them
        assert all(f"! {caveat}" in shown for caveat in study.caveats)

        report = study.report(tmp_path / "report")
        text_ = report.read_text()
        assert "| adamw |" in text_
        assert "| 95% CI (bootstrap) |" in text_
        assert all(c["verdict"] in text_ for c in [*comparisons, pairwise])
        for picture in ("curves.png", *(f"tuning-{name}.png" for name in names)):
            assert (tmp_path / "report" / picture).read_bytes()[:4] == b"\x89PNG"


def test_one_configuration_under_two_names_is_not_distinguishable(api: Api):
    same = {"optimizer": {"preset": "adamw"}}
    spec = {
        "name": "twins",
        "base": {**BASE, "steps": 20},
        "candidates": [{"name": "first", **same}, {"name": "second", **same}],
        "tuning": TUNING,
        "seeds": 3,
    }
    with Client(api.url, api.key) as client:
        study = client.submit_study(spec).wait(timeout=LIMIT, progress=False)
        assert study.status == "succeeded", study.data["error"]
        (comparison,) = study.result["comparisons"]
        assert comparison["differences"] == [0.0, 0.0, 0.0]  # same config, same seeds: same runs
        assert study.result["pairwise"] == []  # two candidates: only the pair with the baseline
        assert "first" in comparison["verdict"] or "second" in comparison["verdict"]
        assert "not distinguishable at k = 3" in comparison["verdict"]
        assert "better" not in comparison["verdict"]


def tokens_at_target(home: Path, target: float, **where: str) -> dict[str, int | None]:
    """Each job's tokens at its first evaluation at or below `target` (None: never reached),
    straight from the stored val_loss points and the job's own batch shape."""
    column, value = next(iter(where.items()))
    found = rows(
        home,
        f"SELECT j.id, j.spec, p.step, p.value FROM symopt_jobs j JOIN symopt_metric_points p "
        f"ON p.job_id = j.id WHERE j.{column} = :v AND p.name = 'val_loss' ORDER BY p.step",
        v=value,
    )
    reached: dict[str, int | None] = {}
    for job_id, spec, step, loss in found:
        shape = json.loads(spec)
        reached.setdefault(job_id, None)
        if reached[job_id] is None and loss is not None and loss <= target:
            reached[job_id] = int(step) * shape["batch"]["size"] * shape["data"]["seq_len"]
    return reached


def test_a_tokens_to_target_study_counts_fewer_tokens_as_better_and_leaves_out_what_never_reaches(
    api: Api,
):
    # The same stack at three step sizes: 3e-2 reaches the target at the first evaluation after
    # step 0 (step 2) on every seed, 3e-3 at step 4-6, 1e-7 never (its loss stays at the initial
    # ln(vocab) ~ 4.6 of the capped corpus's ~98 characters).
    target = 3.9
    candidates = [
        {"name": name, "optimizer": {"preset": "adamw", "lr": lr}}
        for name, lr in (("slow", 3e-3), ("fast", 3e-2), ("stuck", 1e-7))
    ]
    tuning = {  # one trial each, at the candidate's own lr (the one searched value is the default)
        "n_trials": 1,
        "search_space": {"optimizer.weight_decay": {"type": "categorical", "choices": [0.1]}},
        "sampler": "grid",
        "pruner": "none",
        "parallelism": 1,
    }
    base = {**BASE, "steps": 20, "eval": {"every": 2, "batches": 2}, "checkpoint": {"every": 0}}
    spec = {
        "name": "reach",
        "base": base,
        "candidates": candidates,
        "tuning": tuning,
        "seeds": 3,
        "objective": "tokens_to_target",
        "target_loss": target,
    }
    with Client(api.url, api.key) as client:
        study = client.submit_study(spec).wait(timeout=LIMIT, progress=False)
        assert study.status == "succeeded", study.data["error"]
        result = study.result
        sweeps = study.sweeps()
        assert result is not None
        stuck_trials = sweeps["stuck"].list_trials()
    by_name = {c["name"]: c for c in result["candidates"]}
    assert (result["objective"], result["target_loss"], result["baseline"]) == (
        "tokens_to_target",
        target,
        "slow",
    )

    # Each confirmation run's objective: the tokens of its first evaluation at or below the target.
    stored = tokens_at_target(api.home, target, study_id=study.id)
    for name in ("slow", "fast"):
        runs = by_name[name]["runs"]
        assert [run["seed"] for run in runs] == [1, 2, 3]
        expected = [stored[run["job_id"]] for run in runs]
        assert all(tokens is not None for tokens in expected), (name, expected)
        assert [run["objective"] for run in runs] == expected
        assert by_name[name]["tokens_to_target"]["by_seed"] == expected
        assert by_name[name]["summary"]["mean"] == pytest.approx(np.mean(expected))

    # Never reaching the target: the trial has no objective (Optuna was told FAIL), so the candidate's
    # sweep ends without a best trial and the candidate has no confirmation runs; the study goes on.
    (trial,) = stuck_trials
    assert trial["status"] == "succeeded"
    assert trial["objective"] is None
    assert tokens_at_target(api.home, target, sweep_id=sweeps["stuck"].id) == {trial["job_id"]: None}
    storage = api.service.database_url
    told = optuna.load_study(study_name=sweeps["stuck"].data["study_name"], storage=storage).get_trials()
    assert [t.state for t in told] == [TrialState.FAIL]
    stuck = by_name["stuck"]
    assert (stuck["tuning_status"], stuck["tuned"], stuck["runs"], stuck["summary"]) == (
        "failed",
        None,
        [],
        None,
    )
    assert stuck["tokens_to_target"] == {"reached": 0, "runs": 0, "mean": None, "by_seed": []}

    # Fewer tokens is better: fast minus slow is negative on every seed, and called "better".
    fast, never = result["comparisons"]
    differences = [
        by_name["fast"]["runs"][i]["objective"] - by_name["slow"]["runs"][i]["objective"] for i in range(3)
    ]
    assert (fast["candidate"], fast["baseline"], fast["differences"]) == ("fast", "slow", differences)
    assert max(differences) < 0
    assert fast["verdict"].startswith("fast better than slow by "), fast["verdict"]
    assert (never["candidate"], never["seeds"]) == ("stuck", [])
    assert never["verdict"] == "stuck vs slow: no seed where both have a result"
    (pair,) = result["pairwise"]
    assert pair["verdict"] == "fast vs stuck: no seed where both have a result"
