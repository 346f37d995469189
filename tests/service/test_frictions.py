"""Smaller frictions of issue 27, item 8: suggestions for mistyped names, a huge spec file refused
before it is parsed, progress lines that show the last evaluation, a stopped job's summary with
the losses it stored, and `compare` without torch."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from service.client import Client
from service.client.progress import Progress, ProgressLines
from service.commands.jobs import summary_line
from service.testing import one_thread_env
from symopt_core.errors import ConfigError
from symopt_core.spec_tree import MAX_SPEC_FILE_BYTES, spec_tree

from ..specs import tiny_job
from .conftest import TINY_JOB
from .live import Api


def test_a_mistyped_field_or_name_is_answered_with_the_closest_valid_one(client, alice):
    cases = {
        "optimzer": ({**TINY_JOB, "optimzer": {}}, "(did you mean 'optimizer'?)"),
        "seq_lenn": ({**TINY_JOB, "data": {**TINY_JOB["data"], "seq_lenn": 8}}, "(did you mean 'seq_len'?)"),
        "qwen9": ({**TINY_JOB, "model": {"family": "qwen9"}}, "(did you mean 'qwen3'?)"),
        "symetric": ({**TINY_JOB, "optimizer": {"preset": "symetric"}}, "(did you mean 'symmetric'?)"),
    }
    for mistyped, (spec, suggestion) in cases.items():
        response = client.post("/v1/jobs", json=spec, headers=alice.headers)
        assert response.status_code == 422, mistyped
        assert suggestion in response.json()["message"], (mistyped, response.json()["message"])
    unrelated = client.post("/v1/jobs", json={**TINY_JOB, "zzzz": 1}, headers=alice.headers)
    assert "did you mean" not in unrelated.json()["message"]


def test_a_spec_file_over_a_mebibyte_is_refused_before_it_is_parsed(tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\nsteps: 1\n" + "# padding\n" * (MAX_SPEC_FILE_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"huge.yaml is 1,048,\d+ bytes; a spec is a few KB"):
        spec_tree(huge)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "jobs", "submit", str(huge)],
        capture_output=True,
        text=True,
        env=one_thread_env(SYMOPT_URL="http://127.0.0.1:9", SYMOPT_API_KEY="sym_x_y"),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "a spec is a few KB" in done.stderr
    assert time.perf_counter() - began < 60  # refused without parsing or sending (generous bound)


def test_progress_lines_show_an_evaluation_that_arrives_after_its_steps_loss():
    stream = io.StringIO()
    lines, progress = ProgressLines(stream), Progress("job", "running", 10, 20)
    progress.latest = {"train_loss": 3.0}
    lines.show(progress)
    progress.latest["val_loss"] = 2.5  # the same step, its evaluation stored later
    lines.show(progress)
    lines.show(progress)  # nothing new: no line
    assert stream.getvalue().splitlines() == [
        "step 10/20 running train_loss=3.0000",
        "step 10/20 running train_loss=3.0000 val_loss=2.5000",
    ]


def test_a_cancelled_jobs_summary_shows_the_losses_it_stored(api: Api):
    job_id = api.submit(tiny_job(steps=100_000, eval={"every": 5, "batches": 1}, name="stopped"))
    api.wait(job_id, lambda job: job["best_val_loss"] is not None, "a stored evaluation")
    api.http.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
    api.wait(job_id, lambda job: job["status"] == "cancelled", "cancelled")
    job = Client(api.url, api.key).job(job_id)
    line = summary_line(job)
    assert line.startswith(f"job {job_id} cancelled at step ")
    assert "val_loss=-" not in line
    assert "best_val_loss=-" not in line


def test_compare_reads_preset_defaults_from_the_service_without_importing_torch(api: Api):
    job_id = api.submit(tiny_job(steps=5, name="default-lr"))  # no lr: the preset's default
    api.wait(job_id, lambda job: job["status"] == "succeeded", "its end")
    script = (
        "import sys\n"
        "from service.client import Client, compare\n"
        f"row, = compare([Client({api.url!r}, {api.key!r}).job({job_id!r})]).jobs\n"
        "print(row.lr, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=one_thread_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    lr, torch_imported = done.stdout.split()
    assert float(lr) > 0
    assert torch_imported == "False"
