"""History for plots (issue 29): `GET /metrics?max_points=N` answers every point in one page, each
series thinned to at most N points that keep its first, last, lowest and highest values; the
streaming thinning agrees with a plain reading of its definition."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest

from service.store.jobs import create_job
from service.store.metrics import Point, record_metrics
from service.store.thinning import Thinning
from symopt_core.spec import load_spec

from .conftest import TINY_JOB


def reference_thin(values: list[float | str], max_points: int) -> list[int]:
    """The kept indices, read off the definition: first, last, and each run's lowest and highest."""
    n = len(values)
    if n <= max_points:
        return list(range(n))
    runs = (max_points - 2) // 2

    def rank(value: float | str) -> float:
        return (-math.inf if value == "-inf" else math.inf) if isinstance(value, str) else value

    groups: dict[int, list[int]] = defaultdict(list)
    for index in range(1, n - 1):
        if runs:
            groups[(index - 1) * runs // (n - 2)].append(index)
    kept = {0, n - 1}
    for members in groups.values():
        kept.add(min(members, key=lambda i: (rank(values[i]), i)))
        kept.add(max(members, key=lambda i: (rank(values[i]), -i)))
    return sorted(kept)


def thin(values: list[float | str], max_points: int) -> tuple[list[int], list[float | str]]:
    thinning = Thinning(len(values), max_points)
    for step, value in enumerate(values):
        thinning.add(step * 10, value)
    return thinning.points()


@pytest.mark.parametrize(("n", "max_points"), [(1, 2), (5, 10), (1000, 2), (1000, 3), (1000, 50), (997, 101)])
def test_thinning_matches_its_definition(n, max_points):
    generator = random.Random(n * 7 + max_points)
    values: list[float | str] = [generator.gauss(3.0, 1.0) for _ in range(n)]
    if n > 10:
        values[n // 3], values[n // 2], values[2 * n // 3] = "nan", -50.0, "-inf"
    steps, kept = thin(values, max_points)
    assert steps == [index * 10 for index in reference_thin(values, max_points)]
    assert kept == [values[step // 10] for step in steps]
    assert len(steps) <= max(max_points, n if n <= max_points else 0)


def test_a_long_history_keeps_its_ends_spikes_and_divergence():
    values: list[float | str] = [4.0 - i / 50_000 for i in range(100_000)]
    values[31_337] = 9.5  # a loss spike
    values[77_777] = "nan"  # a diverged step
    values[50_000] = 0.5  # the lowest
    steps, _ = thin(values, 1000)
    assert len(steps) <= 1000
    assert steps == sorted(steps)
    assert (steps[0], steps[-1]) == (0, 999_990)
    for index in (31_337, 77_777, 50_000):
        assert index * 10 in steps


def test_max_points_thins_every_series_in_one_answer(client, alice):
    store = client.app.state.store
    with store.transaction() as session:
        job, _ = create_job(session=session, tenant_id=alice.id, spec=load_spec(TINY_JOB))
        points = [Point("train_loss", step, 5.0 - step / 5000, 0.0) for step in range(1, 5001)]
        points += [Point("val_loss", step, 4.0, 0.0) for step in range(100, 5001, 100)]
        points.append(Point("train_loss", 4000, 40.0, 0.0))  # a spike (rewrites step 4000)
        record_metrics(session=session, job_id=job.id, points=points)
    url = f"/v1/jobs/{job.id}/metrics"
    answer = client.get(url, params={"max_points": 200}, headers=alice.headers).json()
    series = {s["name"]: s for s in answer["series"]}
    assert answer["thinned"] is True
    assert answer["truncated"] is False
    assert answer["last_step"] == 5000
    assert len(series["train_loss"]["steps"]) <= 200
    assert 4000 in series["train_loss"]["steps"]
    assert [series["train_loss"]["steps"][0], series["train_loss"]["steps"][-1]] == [1, 5000]
    assert len(series["val_loss"]["steps"]) == 50  # fewer than max_points: every point
    newer = client.get(url, params={"max_points": 200, "since_step": 4990}, headers=alice.headers).json()
    assert newer["thinned"] is False
    assert {s["name"]: len(s["steps"]) for s in newer["series"]} == {"train_loss": 10, "val_loss": 1}
    refused = client.get(url, params={"max_points": 1}, headers=alice.headers)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["query", "max_points"]
