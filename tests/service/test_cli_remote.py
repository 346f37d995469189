"""The remote CLI (`symopt login`, `jobs`, `sweep`, `compare`) against a real `symopt serve`,
run as a user runs it: subprocesses, exit codes, stdout and stderr."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.testing import ROOT, one_thread_env

from ..specs import tiny_job
from ..waiting import LIMIT
from .live import ServiceTenant, SharedService

TINY = tiny_job(name="cli-tiny", seed=4)


@pytest.fixture
def service(shared_service: SharedService) -> ServiceTenant:
    """A tenant of its own in the worker's shared service."""
    return shared_service.tenant()


Done = subprocess.CompletedProcess[str]


class Cli:
    """`symopt ...` with a config home of its own (what `symopt login` writes goes there)."""

    def __init__(self, config: Path, **env: str) -> None:
        self.env = one_thread_env(XDG_CONFIG_HOME=str(config), **env)
        for name in ("SYMOPT_URL", "SYMOPT_API_KEY"):
            if name not in env:
                self.env.pop(name, None)

    def __call__(
        self, *args: str, stdin: str = "", timeout: float = LIMIT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            cwd=ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def cli(service: ServiceTenant, tmp_path: Path) -> Cli:
    logged_in = Cli(tmp_path / "config")
    done = logged_in("login", service.url, stdin=f"{service.api_key}\n")
    assert done.returncode == 0, done.stderr
    return logged_in


def spec_file(directory: Path, **changes: Any) -> Path:
    path = directory / f"{changes.get('name', 'job')}.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def test_login_checks_the_key_and_saves_it_0600(service: ServiceTenant, tmp_path: Path) -> None:
    fresh = Cli(tmp_path / "config")
    refused = fresh("login", service.url, stdin="sym_0000_wrong\n")
    assert refused.returncode == 3
    assert "rejected the key" in refused.stderr
    assert "nothing was saved" in refused.stderr
    saved = tmp_path / "config" / "symopt" / "credentials.json"
    assert not saved.exists()
    accepted = fresh("login", service.url + "/", stdin=f"{service.api_key}\n")
    assert accepted.returncode == 0, accepted.stderr
    assert f"as tenant '{service.tenant}'" in accepted.stdout
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": service.url, "api_key": service.api_key}
    unreachable = fresh("login", "http://127.0.0.1:9", stdin=f"{service.api_key}\n")
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr


def test_submit_watch_show_list_logs_and_compare(cli: Cli, service: ServiceTenant, tmp_path: Path) -> None:
    watched = cli(
        "jobs",
        "submit",
        str(spec_file(tmp_path, name="watched")),
        "--set",
        "optimizer.preset=adamw",
        "--watch",
    )
    assert watched.returncode == 0, watched.stderr
    progress = [line for line in watched.stderr.splitlines() if line.startswith("step ")]
    assert progress[-1].startswith("step 30/30 succeeded")
    assert any("train_loss=" in line and "tokens_per_s=" in line for line in progress)
    assert "succeeded at step 30" in watched.stdout
    first = watched.stderr.split("job ", 1)[1].split()[0]

    second = cli("jobs", "submit", str(spec_file(tmp_path, name="second")), "--set", "optimizer.lr=0.01")
    assert second.returncode == 0, second.stderr
    second_id = second.stdout.strip()
    assert cli("jobs", "watch", second_id, "--progress", "none").returncode == 0

    shown = cli("jobs", "show", first, "--output", "json")
    rest = httpx.get(f"{service.url}/v1/jobs/{first}", headers={"Authorization": f"Bearer {service.api_key}"})
    assert json.loads(shown.stdout) == rest.json()
    table = cli("jobs", "show", first)
    assert "succeeded" in table.stdout
    assert "adamw" in table.stdout

    listed = json.loads(cli("jobs", "list", "--status", "succeeded", "--output", "json").stdout)
    assert [job["id"] for job in listed][:2] == [second_id, first]
    assert first in cli("jobs", "list", "--name", "watched").stdout

    logs = cli("jobs", "logs", first, "--output", "json")
    assert logs.returncode == 0, logs.stderr
    assert "succeeded after 30 steps" in logs.stdout
    followed = cli("jobs", "logs", second_id, "--follow")
    assert "step 30: val_loss" in followed.stdout

    picture = tmp_path / "curves.png"
    compared = cli("compare", first, second_id, "--plot", str(picture))
    assert compared.returncode == 0, compared.stderr
    header, *rows = compared.stdout.splitlines()[:3]
    for column in ("preset", "lr", "batch", "best val", "final val", "tokens to target", "wall s"):
        assert column in header
    assert "watched" in rows[0]
    assert "adamw" in rows[0]
    assert "second" in rows[1]
    assert "0.01" in rows[1]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as_json = json.loads(cli("compare", first, second_id, "--plot", str(picture), "--output", "json").stdout)
    assert [job["job_id"] for job in as_json["jobs"]] == [first, second_id]
    assert as_json["target"] == max(job["best_val_loss"] for job in as_json["jobs"])


def test_cancelled_jobs_exit_130_and_diverged_ones_exit_1(cli: Cli, tmp_path: Path) -> None:
    long = cli("jobs", "submit", str(spec_file(tmp_path, name="long", steps=20_000)))
    job_id = long.stdout.strip()
    cancelled = cli("jobs", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancel" in cancelled.stdout
    assert cli("jobs", "watch", job_id, "--progress", "none").returncode == 130
    again = cli("jobs", "cancel", job_id)
    assert again.returncode == 2
    assert "already finished" in again.stderr
    diverging = spec_file(tmp_path, name="diverging", optimizer={"preset": "adamw", "lr": 1e6})
    assert cli("jobs", "submit", str(diverging), "--watch", "--progress", "none").returncode == 1


def test_bad_input_exits_2_with_the_servers_message_and_a_bad_key_exits_3(
    cli: Cli, service: ServiceTenant, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "model": {"family": "qwen9"}}))
    refused = cli("jobs", "submit", str(bad))
    assert refused.returncode == 2
    suggested = "model: Unknown model family: 'qwen9' (did you mean 'qwen3'?); valid families: gpt2"
    assert suggested in refused.stderr
    assert cli("jobs", "submit", str(tmp_path / "missing.yaml")).returncode == 2
    assert cli("jobs", "show", "no-such-job").returncode == 2
    stranger = Cli(tmp_path / "nobody", SYMOPT_URL=service.url, SYMOPT_API_KEY="sym_0000_wrong")
    rejected = stranger("jobs", "list")
    assert rejected.returncode == 3
    assert "rejected the key from $SYMOPT_API_KEY" in rejected.stderr
    nobody = Cli(tmp_path / "nobody", SYMOPT_URL=service.url)
    assert nobody("jobs", "list").returncode == 3


def test_sweep_submit_watch_list_and_cancel(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    base = {**TINY, "steps": 20, "eval": {"every": 10, "batches": 1}, "optimizer": {"preset": "adamw"}}
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli-sweep",
                "base": base,
                "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
                "n_trials": 3,
                "parallelism": 2,
                "pruner": "none",
            }
        )
    )
    submitted = cli("sweep", "submit", str(spec), "--set", "n_trials=2")
    assert submitted.returncode == 0, submitted.stderr
    sweep_id = submitted.stdout.strip()  # the id alone on stdout; the resolved space on stderr
    assert "search space (default):" in submitted.stderr
    assert "optimizer.lr  log_uniform  0.0010 .. 0.0100" in submitted.stderr
    watched = cli("sweep", "watch", sweep_id)
    assert watched.returncode == 0, watched.stderr
    assert "2/2 trials" in watched.stdout
    assert "best adamw:" in watched.stdout
    listed = json.loads(cli("sweep", "list", "--output", "json").stdout)
    assert listed[0]["id"] == sweep_id
    assert listed[0]["status"] == "succeeded"
    trials = json.loads(cli("jobs", "list", "--sweep", sweep_id, "--output", "json").stdout)
    assert len(trials) == 2
    second = cli("sweep", "submit", str(spec), "--set", "base.steps=20000", "--set", "n_trials=1")
    other = second.stdout.strip()
    cancelled = cli("sweep", "cancel", other, "--output", "json")
    assert json.loads(cancelled.stdout)["status"] in ("cancelling", "cancelled")
    assert cli("sweep", "show", other, "--watch", "--output", "json").returncode == 0


def test_study_submit_watch_show_report_and_cancel(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "study.yaml"
    base = {**TINY, "steps": 20, "eval": {"every": 10, "batches": 1}}
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli-study",
                "base": base,
                "candidates": ["adamw", "muon"],
                "tuning": {
                    "n_trials": 3,
                    "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 2e-2}},
                    "sampler": "grid",
                    "pruner": "none",
                },
                "seeds": 3,
            }
        )
    )
    submitted = cli("study", "submit", str(spec), "--set", "tuning.n_trials=2", "--set", "seeds=2")
    assert submitted.returncode == 0, submitted.stderr
    study_id = submitted.stdout.strip()
    watched = cli("study", "watch", study_id)
    assert watched.returncode == 0, watched.stderr
    assert "muon vs adamw" in watched.stdout or "adamw" in watched.stdout
    shown = json.loads(cli("study", "show", study_id, "--output", "json").stdout)
    assert (shown["status"], shown["stage"]) == ("succeeded", "done")
    assert shown["spec"]["tuning"]["n_trials"] == 2  # the --set values, as the service stored them
    assert shown["spec"]["seeds"] == 2
    (comparison,) = shown["result"]["comparisons"]
    assert comparison["verdict"] in watched.stdout  # the terminal shows the verdict the API holds
    listed = json.loads(cli("study", "list", "--output", "json").stdout)
    assert listed[0]["id"] == study_id
    reported = cli("study", "report", study_id, str(tmp_path / "report"))
    assert reported.returncode == 0, reported.stderr
    assert comparison["verdict"] in (tmp_path / "report" / "report.md").read_text()

    # A long study, cancelled while it tunes: its sweeps are cancelled with it.
    second = cli("study", "submit", str(spec), "--set", "base.steps=20000", "--output", "json")
    other = json.loads(second.stdout)["id"]
    cancelled = cli("study", "cancel", other, "--output", "json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] in ("cancelling", "cancelled")
    final = cli("study", "show", other, "--watch", "--output", "json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["status"] == "cancelled"
    for candidate in json.loads(final.stdout)["progress"]["tuning"].values():
        shown_sweep = json.loads(cli("sweep", "show", candidate["sweep_id"], "--output", "json").stdout)
        assert shown_sweep["sweep"]["status"] == "cancelled", shown_sweep["sweep"]
        assert all(trial["status"] in ("cancelled", "succeeded") for trial in shown_sweep["trials"])
