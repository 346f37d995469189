"""The README's blocks, run as written against a real `symopt serve` (the worker's shared one, as
a tenant of their own whose url and key are saved where `symopt serve` or `symopt login` saves
them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.testing import ROOT, one_thread_env

from ..waiting import LIMIT
from .live import ServiceTenant, SharedService


def readme_block(tag: str, language: str = "bash") -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- tested: {tag} -->\n```{language}\n(.*?)```", text, re.DOTALL)
    assert match, f"README has no block tagged {tag}"
    return match.group(1)


def save_credentials(config: Path, tenant: ServiceTenant) -> None:
    """What `symopt serve` (first start) and `symopt login` save: the url and the key."""
    (config / "symopt").mkdir(parents=True)
    (config / "symopt" / "credentials.json").write_text(
        json.dumps({"url": tenant.url, "api_key": tenant.api_key})
    )


def test_readme_curl_block_submits_reads_and_cancels_a_job(tmp_path: Path, shared_service: SharedService):
    block = readme_block("api-curl")
    service = shared_service.tenant()
    save_credentials(tmp_path / "config", service)
    env = one_thread_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=LIMIT,
    )
    assert done.returncode == 0, done.stderr
    documents, text, decoder = [], done.stdout.strip(), json.JSONDecoder()
    while text:  # curl prints the bodies back to back, without newlines
        document, end = decoder.raw_decode(text)
        documents.append(document)
        text = text[end:].lstrip()
    job, metrics, listing, cancelled = documents
    assert job["status"] == "running"  # the block waits for its first points before reading it
    assert job["name"] == "curl-demo"
    assert metrics["job_id"] == job["id"]
    assert "train_loss" in {s["name"] for s in metrics["series"]}  # a newcomer sees a curve begin
    assert {s["name"] for s in metrics["series"]} <= {"train_loss", "val_loss"}
    assert listing["data"][0]["id"] == job["id"]
    assert cancelled["status"] in ("cancelled", "cancelling")
    key = json.loads((tmp_path / "config" / "symopt" / "credentials.json").read_text())["api_key"]
    deadline, headers = time.monotonic() + LIMIT, {"Authorization": f"Bearer {key}"}
    while time.monotonic() < deadline:
        final = httpx.get(f"{service.url}/v1/jobs/{job['id']}", headers=headers)
        if final.json()["status"] == "cancelled":
            break
        time.sleep(0.2)
    assert final.json()["status"] == "cancelled"


def test_readme_python_and_terminal_blocks_run_as_written(tmp_path: Path, shared_service: SharedService):
    python_block = readme_block("client-python", "python")
    cli_block = readme_block("client-cli")
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    service = shared_service.tenant()
    save_credentials(tmp_path / "config", service)
    env = one_thread_env(
        XDG_CONFIG_HOME=str(tmp_path / "config"),  # where `symopt serve` saved url and key
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(ROOT),
    )
    env.pop("SYMOPT_URL", None)
    env.pop("SYMOPT_API_KEY", None)
    ran = subprocess.run(
        [sys.executable, "-c", python_block],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=LIMIT,
    )
    assert ran.returncode == 0, ran.stderr
    status, best = ran.stdout.splitlines()[0].split()
    assert status == "succeeded"
    assert float(best) < 4.0
    assert list(work.glob("*-step_*.pt")), "download_checkpoint saved nothing"

    cli_env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "cli-config"), "SYMOPT_URL": service.url}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", cli_block],
        input=f"{service.api_key}\n",
        capture_output=True,
        text=True,
        env=cli_env,
        cwd=work,
        timeout=LIMIT,
    )
    assert done.returncode == 0, done.stderr
    assert f"as tenant '{service.tenant}'" in done.stdout
    assert json.loads((work / "job.json").read_text())["status"] == "succeeded"
    assert (work / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "tokens to target" in done.stdout


def test_readme_agents_block_runs_a_sweep_in_the_users_script(tmp_path: Path, shared_service: SharedService):
    block = readme_block("agents")
    service = shared_service.tenant()
    save_credentials(tmp_path / "config", service)
    env = one_thread_env(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    env.pop("SYMOPT_URL", None)
    env.pop("SYMOPT_API_KEY", None)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=LIMIT,
    )
    assert done.returncode == 0, done.stderr
    assert "ran 2 trial(s)" in done.stderr
    sweeps = httpx.get(
        f"{service.url}/v1/sweeps", headers={"Authorization": f"Bearer {service.api_key}"}, timeout=60
    ).json()["data"]
    assert [(s["status"], s["trials_finished"]) for s in sweeps] == [("succeeded", 2)]
    assert sweeps[0]["id"] in done.stdout  # `symopt sweep show`
