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
