"""Benchmarks run in CI in --quick mode: they must produce a well-formed table and JSON."""

from __future__ import annotations

import json

from benchmarks import optimizer_step


def test_optimizer_step_quick_run_writes_a_complete_table(tmp_path, capsys):
    out = tmp_path / "step.json"
    assert optimizer_step.main(["--quick", "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    names = [row["optimizer"] for row in result["rows"]]
    assert names[:2] == ["torch AdamW (fused)", "torch Muon + AdamW"]
    assert {f"symopt {p}" for p in ("adamw", "muon", "symmetric", "sf-normuon")} <= set(names)
    for row in result["rows"]:
        assert row["median_ms"] > 0
    symmetric = next(r for r in result["rows"] if r["optimizer"] == "symopt symmetric")
    assert symmetric["floor_ms"] > 0
    assert "symopt symmetric" in capsys.readouterr().out
    # Gram Newton–Schulz: fewer FLOPs than Polar Express on the same rectangular matrices.
    gram = next(r for r in result["rows"] if r["optimizer"] == "symopt symmetric (gram NS)")
    assert 0 < gram["floor_ms"] < symmetric["floor_ms"]


def test_optimizer_step_quick_run_compares_the_polar_backends(tmp_path, capsys):
    out = tmp_path / "polar.json"
    assert optimizer_step.main(["--quick", "--compare", "polar", "--out", str(out), "--device", "cpu"]) == 0
    backends = json.loads(out.read_text())["polar_backends"]
    assert backends["blocks"] == 2
    # The tiny Qwen3 block: q/k/v/o heads (16×64 after transposing o) and gate/up/down (64×192).
    assert {row["shape"]: row["batch"] for row in backends["rows"]} == {"16x64": 12, "64x192": 3}
    for row in backends["rows"]:
        assert row["polar_express_ms"] > 0
        assert row["gram_newton_schulz_ms"] > 0
        assert row["gram_newton_schulz_gflop"] < row["polar_express_gflop"]
    # 5 steps on s×L: 20s²L + 10s³ (Polar Express) against 8s²L + 28s³ (Gram NS), per matrix.
    heads = next(row for row in backends["rows"] if row["shape"] == "16x64")
    assert heads["polar_express_gflop"] == 12 * (20 * 16**2 * 64 + 10 * 16**3) / 1e9
    assert heads["gram_newton_schulz_gflop"] == 12 * (8 * 16**2 * 64 + 28 * 16**3) / 1e9
    assert "polar backends" in capsys.readouterr().out


def test_api_metrics_quick_run_reports_both_reads(tmp_path, capsys):
    from benchmarks import api_metrics

    out = tmp_path / "api.json"
    assert api_metrics.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "sqlite"
    assert result["points"] == 2000
    for kind in ("full_history", "incremental_poll"):
        assert 0 < result[kind]["p50_ms"] <= result[kind]["p99_ms"]
        assert result[kind]["bytes"] > 0
    assert "incremental_poll" in capsys.readouterr().out


def test_scheduler_ingest_quick_run_counts_every_point(tmp_path, capsys):
    from benchmarks import scheduler_ingest

    out = tmp_path / "ingest.json"
    assert scheduler_ingest.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["points"] == 2 * 10 * 5
    assert result["points_per_s"] > 0
    assert "points/s" in capsys.readouterr().out


def test_service_load_quick_run_counts_requests_and_errors(tmp_path, capsys):
    from benchmarks import service_load

    out = tmp_path / "load.json"
    assert service_load.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["submissions"] == {**result["submissions"], "submitted": 8, "errors": 0}
    assert result["metrics"]["requests"] > 0
    assert result["metrics"]["errors"] == 0
    assert 0 < result["metrics"]["p50_ms"] <= result["metrics"]["p99_ms"]
    assert result["ingest_points_per_s"] > 0
    assert "GET metrics" in capsys.readouterr().out


def test_dashboard_load_quick_run_times_a_page_that_drew_every_point(tmp_path, capsys):
    from benchmarks import dashboard_load

    out = tmp_path / "dashboard.json"
    assert dashboard_load.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["steps"] == 500
    assert result["points"] == 500 + 5  # train_loss at every step, val_loss every 100
    assert len(result["page_ms"]) == result["loads"] == 1
    assert 0 < result["median_page_ms"] <= result["median_wall_ms"]
    assert "loss curve drawn" in capsys.readouterr().out


def test_sharded_step_quick_run_projects_each_k(tmp_path, capsys):
    from benchmarks import sharded_step

    out = tmp_path / "sharded.json"
    assert (
        sharded_step.main(["--quick", "--out", str(out), "--device", "cpu", "--presets", "adamw", "muon"])
        == 0
    )
    result = json.loads(out.read_text())
    adamw, muon = result["presets"]
    assert adamw["whole_matrices"] == 0  # nothing to split: every k is the same step, no traffic
    assert all(row["received_bytes_per_rank"] == 0 for row in adamw["rows"])
    assert [row["k"] for row in muon["rows"]] == [1, 2]
    one, two = muon["rows"]
    assert one["received_bytes_per_rank"] == 0
    assert 0 < two["received_bytes_per_rank"] < muon["gathered_bytes_per_step"]
    assert all(row["projected_ms"] > 0 for row in muon["rows"])
    assert "muon" in capsys.readouterr().out
    traffic_out = tmp_path / "traffic.json"
    args = [
        "--traffic-only",
        "--shape",
        "tiny",
        "--presets",
        "muon",
        "--k",
        "1",
        "2",
        "--out",
        str(traffic_out),
    ]
    assert sharded_step.main(args) == 0
    [planned] = json.loads(traffic_out.read_text())["traffic"]
    assert planned["whole_matrices"] == muon["whole_matrices"]  # the plan counts what the step computed
    assert planned["gathered_bytes_per_step"] == muon["gathered_bytes_per_step"]
    assert two["received_bytes_per_rank"] <= planned["max_received_bytes_per_rank"]["2"]


def test_job_data_quick_run_times_every_path(tmp_path, capsys):
    from benchmarks import job_data

    out = tmp_path / "job_data.json"
    assert job_data.main(["--quick", "--out", str(out)]) == 0
    rows = {row["tokenizer"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"char", "byte", "bpe 512"}
    for row in rows.values():
        assert row["tokens"] > 0
        assert row["later_job_s"] > 0
        assert row["first_job_s"] > 0
    assert rows["char"]["uncached_s"] > 0
    assert "later job" in capsys.readouterr().out


def test_abusive_tenant_quick_run_reports_both_phases(tmp_path, capsys):
    from benchmarks import abusive_tenant

    out = tmp_path / "abuse.json"
    assert abusive_tenant.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for phase in ("idle", "abused"):
        assert result[phase]["requests"] == 30
        assert 0 < result[phase]["p50_ms"] <= result[phase]["p99_ms"]
    answers = result["abuser"]["answers"]
    assert set(answers) <= {"422", "429"}  # refused, never a server error
    assert answers["422"] >= 2  # both invalid sweeps were answered before the burst ran out
    assert result["abuser"]["invalid_max_ms"] < 5_000  # each bounded by the expansion cap
    assert "p99 abused / idle" in capsys.readouterr().out
