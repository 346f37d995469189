"""Comparison studies run by a real service: equal budgets, paired seeded runs, statistics that
a direct computation from the stored runs reproduces, no false winner, and a restart mid-study."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sqlalchemy import create_engine, text

from service.client import Client
from service.testing import live_service

BASE: dict[str, Any] = {
    "model": {"family": "qwen3", "size": "tiny"},
    "data": {"corpus": "pystdlib", "seq_len": 32},
    "batch": {"size": 4},
    "steps": 30,
    "log_every": 10,
    "eval": {"every": 10, "batches": 2},
    "checkpoint": {"every": 10},
    "schedule": {"kind": "constant"},
    "seed": 0,
}
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
    import json

    found = rows(
        home,
        "SELECT study_candidate, study_seed, result FROM symopt_jobs "
        "WHERE study_id = :s AND study_seed IS NOT NULL",
        s=study_id,
    )
    return {(c, int(s)): float(json.loads(r)["best_val_loss"]) for c, s, r in found}


def test_a_study_survives_a_restart_spends_equal_budgets_and_its_statistics_check_out(tmp_path: Path):
    spec = {"name": "pair", "base": BASE, "candidates": ["adamw", "muon"], "tuning": TUNING, "seeds": 3}
    env = {"SYMOPT_RAY_NUM_CPUS": "2"}
    with live_service(tmp_path, env=env) as service:
        key = service.api_key
        with Client(service.url, key) as client:
            study = client.submit_study(spec)
            deadline = time.monotonic() + 400
            while study.refresh().data["progress"]["confirmation"]["finished"] < 1:
                assert time.monotonic() < deadline, study.data
                time.sleep(0.5)
            running = study.data["progress"]["confirmation"]
            assert study.stage == "confirming"
            assert running["finished"] < running["planned"] == 6  # killed in the middle of stage 2
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    time.sleep(2)
    with live_service(tmp_path, env=env) as restarted, Client(restarted.url, key) as client:
        study = client.study(study.id).wait(timeout=600, progress=False)
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
        assert sorted((c, s, n) for c, s, n in runs) == [
            (c, s, 1) for c in ("adamw", "muon") for s in (1, 2, 3)
        ]

        # Equal budgets: each candidate's sweep ran the same trials over the same space and pruner.
        sweeps = study.sweeps()
        assert set(sweeps) == {"adamw", "muon"}
        for sweep in sweeps.values():
            assert sweep.data["spec"]["n_trials"] == 2
            assert sweep.data["spec"]["pruner"] == "none"
            assert sweep.data["search_space"] == {"default": TUNING["search_space"]}
        tokens = {
            name: rows(tmp_path, "SELECT sum(step) FROM symopt_jobs WHERE sweep_id = :s", s=sweep.id)[0][0]
            for name, sweep in sweeps.items()
        }
        assert tokens["adamw"] == tokens["muon"] == 2 * 30

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
        (comparison,) = result["comparisons"]
        assert (comparison["candidate"], comparison["baseline"]) == ("muon", "adamw")
        differences = np.array([stored[("muon", s)] - stored[("adamw", s)] for s in (1, 2, 3)])
        assert comparison["differences"] == pytest.approx(list(differences))
        rng = np.random.default_rng(statistics["seed"])
        means = differences[rng.integers(0, 3, size=(statistics["resamples"], 3))].mean(axis=1)
        low, high = np.quantile(means, [0.025, 0.975])
        assert comparison["summary"]["bootstrap"] == {"low": pytest.approx(low), "high": pytest.approx(high)}
        width = scipy_stats.t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
        assert comparison["summary"]["t"]["low"] == pytest.approx(differences.mean() - width)
        called = (low > 0 or high < 0) and abs(differences.mean()) > width
        assert ("not distinguishable" not in comparison["verdict"]) == called
        assert result["verdicts"] == [comparison["verdict"]]

        report = study.report(tmp_path / "report")
        text_ = report.read_text()
        assert "| adamw |" in text_
        assert "| 95% CI (bootstrap) |" in text_
        assert comparison["verdict"] in text_
        for picture in ("curves.png", "tuning-adamw.png", "tuning-muon.png"):
            assert (tmp_path / "report" / picture).read_bytes()[:4] == b"\x89PNG"


def test_one_configuration_under_two_names_is_not_distinguishable(tmp_path: Path):
    same = {"optimizer": {"preset": "adamw"}}
    spec = {
        "name": "twins",
        "base": {**BASE, "steps": 20},
        "candidates": [{"name": "first", **same}, {"name": "second", **same}],
        "tuning": TUNING,
        "seeds": 3,
    }
    with (
        live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "2"}) as service,
        Client(service.url, service.api_key) as client,
    ):
        study = client.submit_study(spec).wait(timeout=600, progress=False)
        assert study.status == "succeeded", study.data["error"]
        (comparison,) = study.result["comparisons"]
        assert comparison["differences"] == [0.0, 0.0, 0.0]  # same config, same seeds: same runs
        assert "first" in comparison["verdict"] or "second" in comparison["verdict"]
        assert "not distinguishable at k = 3" in comparison["verdict"]
        assert "better" not in comparison["verdict"]
