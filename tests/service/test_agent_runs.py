"""Agents for real: `symopt agent` processes run the example script (a plain torch MLP language
model, not a symopt family) for every trial of a sweep on the live service; one agent is killed
with SIGKILL in the middle of a trial, its lease runs out, and the trial runs again elsewhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.testing import ROOT, one_thread_env

from ..waiting import wait_for
from .live import Api, events, rows

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("agent-runs")]

EXAMPLE = ROOT / "examples" / "agents" / "train_mlp.py"
FINAL = {"succeeded", "failed", "cancelled", "diverged", "pruned"}


def agent(
    api: Api, target: str, host: str, log: Path, *extra: str, session: bool = False
) -> subprocess.Popen[str]:
    """`symopt agent` running the example script; session: in a process group of its own, as a
    command typed at a terminal is (Ctrl-C reaches the agent and its child alike)."""
    command = [sys.executable, "-m", "service.cli", "agent", target, "--host", host, *extra, "--"]
    script = [sys.executable, str(EXAMPLE), "--log", str(log), "--checkpoint-every", "100"]
    env = one_thread_env(SYMOPT_URL=api.url, SYMOPT_API_KEY=api.key)
    return subprocess.Popen(
        command + script,
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=session,
        preexec_fn=_terminal_signals if session else None,
    )


def _terminal_signals() -> None:
    """Ctrl-C and Ctrl-\\ as a terminal's command has them: a runner that started the tests in
    the background (`pytest &` in a script) ignores them, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def sweep_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "agents" / "sweep.yaml").read_text())
    return spec


def trial_rows(api: Api, sweep_id: str) -> list[Any]:
    return rows(
        api.home,
        "SELECT id, status, attempt, failures, agent_host, checkpoint_step, step FROM symopt_jobs "
        "WHERE sweep_id = :sweep ORDER BY trial_number",
        sweep=sweep_id,
    )


def reported(log: Path) -> dict[str, dict[tuple[str, int], float]]:
    """What the store should hold of what the runs reported, per job: an attempt that resumes
    from step r keeps its predecessors' points up to r (the service drops the lost attempt's
    later ones when its lease runs out), then adds its own."""
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        point = json.loads(line)
        by_job[point["job"]].append(point)
    kept: dict[str, dict[tuple[str, int], float]] = {}
    for job, points in by_job.items():
        newest: dict[tuple[str, int], float] = {}
        for attempt in sorted({p["attempt"] for p in points}):
            mine = [p for p in points if p["attempt"] == attempt]
            resume = -1 if mine[0]["resume"] is None else mine[0]["resume"]
            newest = {key: value for key, value in newest.items() if key[1] <= resume}
            newest.update({(p["name"], p["step"]): p["value"] for p in mine})
        kept[job] = newest
    return kept


def stored(api: Api, job_id: str) -> dict[tuple[str, int], float]:
    found = rows(
        api.home, "SELECT name, step, value FROM symopt_metric_points WHERE job_id = :job", job=job_id
    )
    return {(name, step): value for name, step, value in found}


def test_three_agents_run_a_sweep_and_survive_a_killed_one(api: Api, tmp_path: Path) -> None:
    # No pruner: a report answered "prune" between the check below and the kill would let the
    # victim's trial finish before its agent dies (pruning through agents: test_agent_trainer.py).
    response = api.http.post("/v1/sweeps", json={**sweep_spec(), "pruner": "none"})
    assert response.status_code == 201, response.text
    sweep_id = response.json()["id"]
    log = tmp_path / "points.jsonl"
    agents = [agent(api, sweep_id, f"agent-{i}", log, "--lease", "6") for i in range(3)]
    victim = agents[0]

    def victims_checkpointed_trial() -> Any:
        # agent-0 holds a running trial that has stored its checkpoint at step 100, far from its end
        for row in trial_rows(api, sweep_id):
            if row.agent_host == "agent-0" and row.status == "running" and row.checkpoint_step == 100:
                return row if row.step < 300 else None
        return None

    def progress() -> Any:
        return tuple(tuple(r) for r in trial_rows(api, sweep_id))

    held = wait_for(
        victims_checkpointed_trial, progress=progress, what="agent-0 to checkpoint a trial", every=0.05
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_pids = {p["pid"] for p in map(json.loads, log.read_text().splitlines()) if p["job"] == held.id}

    def done() -> bool:
        return all(a.poll() is not None for a in agents[1:])

    wait_for(done, progress=progress, what="the surviving agents to run every trial")
    for survivor in agents[1:]:
        assert survivor.returncode == 0, survivor.stderr.read() if survivor.stderr else ""

    # the killed agent's training process died with it (PR_SET_PDEATHSIG)
    for pid in killed_pids:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists() or _zombie(pid), progress=lambda: 0,
                 what=f"the killed agent's child {pid} to die", stall=60)  # fmt: skip

    sweep = api.http.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["status"] == "succeeded", sweep
    trials = api.http.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"]
    assert len(trials) == 12  # n_trials exact
    assert all(t["status"] in FINAL for t in trials), [t["status"] for t in trials]
    optuna_states = rows(
        api.home,
        "SELECT t.state FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :name",
        name=f"symopt-{sweep_id}",
    )
    assert len(optuna_states) == 12
    assert "RUNNING" not in {state for (state,) in optuna_states}

    # the killed trial's lease ran out, and the trial ran again (resumed from its checkpoint)
    again = next(r for r in trial_rows(api, sweep_id) if r.id == held.id)
    assert (again.attempt, again.failures) == (2, 1)
    assert again.status in FINAL
    assert any("ran out" in e["message"] for e in events(api.home, held.id, "status"))
    assert any(
        "resuming from its checkpoint at step 100" in e["message"]
        for e in events(api.home, held.id, "status")
    )

    # every reported point is stored, once: what each trial's attempts reported, as they resumed
    sent = reported(log)
    assert set(sent) == {t["job_id"] for t in trials}
    for job_id, expected in sent.items():
        assert stored(api, job_id) == pytest.approx(expected), job_id


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_ctrl_c_fails_the_trial_and_stops_the_agent(api: Api, tmp_path: Path) -> None:
    spec = {**sweep_spec(), "n_trials": 2, "parallelism": 1}
    spec["base"] = {**spec["base"], "steps": 100_000}  # long enough to be interrupted
    sweep_id = api.http.post("/v1/sweeps", json=spec).json()["id"]
    log = tmp_path / "points.jsonl"
    running = agent(api, sweep_id, "agent-int", log, session=True)
    wait_for(lambda: log.exists() and log.stat().st_size > 0, progress=lambda: 0, what="a first report")
    os.killpg(running.pid, signal.SIGINT)  # Ctrl-C at the terminal: the agent and its command
    assert running.wait(timeout=300) == 130
    job_ids = [r.id for r in trial_rows(api, sweep_id)]
    job = api.job(job_ids[0])
    assert job["status"] == "failed"
    assert "interrupted" in (job["error"] or "") or "KeyboardInterrupt" in (job["error"] or "")


def test_a_study_runs_its_tuning_and_confirmation_through_agents(api: Api, tmp_path: Path) -> None:
    base = {**sweep_spec()["base"], "steps": 150}
    spec = {
        "name": "agents-study",
        "executor": "agents",
        "base": base,
        "candidates": ["adamw", "symmetric"],
        "tuning": {"n_trials": 2, "search_space": "auto", "auto_batch_size": False, "sampler": "random",
                   "pruner": "none", "parallelism": 2},
        "seeds": 2,
    }  # fmt: skip
    response = api.http.post("/v1/studies", json=spec)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    log = tmp_path / "points.jsonl"
    agents = [agent(api, study_id, f"study-agent-{i}", log) for i in range(2)]

    def progress() -> Any:
        return log.stat().st_size if log.exists() else 0

    wait_for(
        lambda: all(a.poll() is not None for a in agents), progress=progress, what="the agents to finish"
    )
    for finished in agents:
        assert finished.returncode == 0, finished.stderr.read() if finished.stderr else ""
    study = api.http.get(f"/v1/studies/{study_id}").json()
    assert (study["status"], study["stage"]) == ("succeeded", "done"), study
    result = study["result"]
    # the result table a service-run study reports: tuned params, objectives by seed, summaries,
    # the comparison with the baseline and its verdict
    assert [c["name"] for c in result["candidates"]] == ["adamw", "symmetric"]
    for candidate in result["candidates"]:
        assert candidate["tuning_status"] == "succeeded"
        assert candidate["tuned"]["params"]["optimizer.lr"] > 0
        assert [run["seed"] for run in candidate["runs"]] == [1, 2]
        for run in candidate["runs"]:
            job = api.job(run["job_id"])
            assert (job["status"], job["executor"], job["spec"]["seed"]) == (
                "succeeded",
                "agents",
                run["seed"],
            )
            assert run["objective"] == pytest.approx(job["result"]["best_val_loss"])
            assert job["agent_host"].startswith("study-agent-")
        assert candidate["summary"]["n"] == 2
    assert len(result["comparisons"]) == 1
    assert result["verdicts"]
    # every tuning trial and confirmation run went through an agent
    jobs = rows(api.home, "SELECT executor, status FROM symopt_jobs WHERE tenant_id = "
                "(SELECT tenant_id FROM symopt_studies WHERE id = :study)", study=study_id)  # fmt: skip
    assert len(jobs) == 2 * 2 + 2 * 2
    assert {tuple(j) for j in jobs} == {("agents", "succeeded")}
