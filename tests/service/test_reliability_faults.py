"""Faults a running service must survive, injected for real, each ending with a count that shows
nothing was lost: every metric step once, every trial told once.

  - `kill -9` of the Ray worker running a sweep trial: its job resumes from its checkpoint and
    the sweep still ends with exactly n_trials complete trials, as Optuna's tables say too;
  - a PostgreSQL server restarted (and stopped for seconds) under a running job: a private
    server of this test's own, never the shared one on 5432;
  - a full disk under the checkpoints: a tmpfs of 256 KiB as the artifact root.

The plain-job faults (a killed worker, a killed service, a killed GCS) are in test_scheduler.py,
a service killed mid-sweep in test_sweeps.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from service.store import Store
from service.store.migrate import upgrade
from service.testing import live_service, restartable_port

from ..waiting import wait_for
from .conftest import make_tenant
from .live import (
    Api,
    Sweeps,
    cancel_once_past,
    complete_series,
    logged_steps_whole,
    study_counts,
    wait_for_checkpoint,
    worker_starts,
)
from .test_scheduler import private_api, tiny
from .test_sweeps import BASE, LR

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


# -- a sweep trial's worker killed --------------------------------------------------------------

# The kill comes after the first checkpoint (step 20), with hundreds of steps still to run (a
# tiny trial trains about 100 steps a second: a short one could end before the kill lands).
TRIAL_STEPS = 600
TRIAL_BASE = {**BASE, "steps": TRIAL_STEPS, "eval": {"every": 300, "batches": 2}, "checkpoint": {"every": 20}}
TOKENS_PER_STEP = BASE["batch"]["size"] * BASE["data"]["seq_len"]  # type: ignore[index]


def first_trial_job(sweeps: Sweeps, sweep_id: str) -> str:
    def submitted() -> str | None:
        jobs = [t["job_id"] for t in sweeps.trials(sweep_id) if t["job_id"]]
        return str(jobs[0]) if jobs else None

    return wait_for(submitted, progress=lambda: sweeps.progress(sweep_id), what="the first trial's job")


def test_a_killed_sweep_trial_worker_resumes_and_the_sweep_loses_nothing(api: Api) -> None:
    url = api.service.database_url
    sweeps = Sweeps(api.url, api.key)
    sweep_id = sweeps.create(
        TRIAL_BASE, name="killed-trial", search_space=LR, n_trials=3, parallelism=1, pruner="none"
    )
    killed = first_trial_job(sweeps, sweep_id)
    os.kill(wait_for_checkpoint(api, killed), signal.SIGKILL)
    sweep = sweeps.wait(sweep_id)
    trials = sweeps.trials(sweep_id)
    jobs = {t["job_id"]: api.job(t["job_id"]) for t in trials}
    for job_id in jobs:  # every trial's series whole: the killed one's replayed steps once
        complete_series(api, job_id, TRIAL_STEPS, 10)
        assert api.series(job_id, "val_loss")[0] == [0, 300, 600]
    val_losses = dict(zip(*api.series(killed, "val_loss"), strict=True))
    assert sweep["status"] == "succeeded", sweep
    assert sorted(t["trial_number"] for t in trials) == [0, 1, 2]  # none lost, none twice
    assert [t["status"] for t in trials] == ["succeeded"] * 3
    assert jobs[killed]["attempt"] == 2
    assert [job["attempt"] for job_id, job in jobs.items() if job_id != killed] == [1, 1]
    started = worker_starts(api.home, killed)
    assert len(started) == 2
    assert started[1]["resume_from"].endswith(".pt")  # the retry resumed from its checkpoint
    assert study_counts(url, sweep["study_name"]) == {"COMPLETE": 3}
    study = {t.number: t for t in optuna.load_study(study_name=sweep["study_name"], storage=url).trials}
    for trial in trials:
        frozen = study[trial["trial_number"]]
        assert frozen.state == TrialState.COMPLETE
        assert frozen.value == trial["objective"]
    # Intermediate values reported for the killed trial are its stored evaluations (a resumed
    # run recomputes them bit-identically), keyed by tokens, each once.
    (killed_trial,) = [t for t in trials if t["job_id"] == killed]
    for tokens, value in study[killed_trial["trial_number"]].intermediate_values.items():
        assert tokens % TOKENS_PER_STEP == 0
        assert value == val_losses[tokens // TOKENS_PER_STEP]


# -- PostgreSQL restarted under a running job ---------------------------------------------------


def as_postgres(program: str, *args: str) -> None:
    """Run a server binary as the `postgres` OS user: the server refuses to run as root."""
    command = ["runuser", "-u", "postgres", "--", str(POSTGRES_BIN / program), *args]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)


@dataclass
class PrivatePostgres:
    """A PostgreSQL 15 server of one test's own (initdb in a temp directory, trust auth)."""

    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        log = self.directory / "server.log"
        as_postgres("pg_ctl", "-D", str(self.directory / "data"), "-l", str(log), "-w", "-t", "60", *args)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl("-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "stop")

    def restart(self) -> None:
        self.ctl("-m", "fast", "restart")  # the options of the last start are kept


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"needs PostgreSQL 15's server binaries in {POSTGRES_BIN}: apt-get install postgresql-15")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starts a private PostgreSQL server as the `postgres` user: needs root and runuser")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="symopt-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    server = PrivatePostgres(directory, restartable_port())
    try:
        data = str(directory / "data")
        as_postgres("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "--no-instructions")
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def test_a_job_survives_a_restarted_postgres_and_keeps_every_metric(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    upgrade(private_postgres.url)
    store = Store.connect(private_postgres.url)
    tenant = make_tenant(store, "restart")
    store.close()
    every = 5
    with live_service(tmp_path, private_postgres.url, env={"SYMOPT_RAY_NUM_CPUS": "1"}) as service:
        api = Api(service, tenant.key)
        job_id = api.submit(tiny(steps=1_000_000, log_every=every, eval={"every": 400, "batches": 2}))
        api.wait(job_id, lambda job: job["status"] == "running" and job["step"] >= 20)
        private_postgres.restart()  # every pooled connection is now dead
        time.sleep(1.0)
        private_postgres.stop()  # away for seconds: the scheduler's writes must wait, not drop
        time.sleep(3.0)
        private_postgres.start()
        # The API's pool recovers on the first requests after the outage: reads and a write.
        assert api.http.get(f"/v1/jobs/{job_id}").status_code == 200
        assert api.http.get("/v1/jobs").status_code == 200
        after = api.submit(tiny(steps=10))
        back_at_step = api.job(job_id)["step"]
        job = cancel_once_past(api, job_id, attempt=1, step=back_at_step + 100)  # the run never noticed
        logged_steps_whole(api, job_id, every)
        assert api.series(job_id, "val_loss")[0] == list(range(0, job["step"] + 1, 400))
        assert api.finished(after)["status"] == "succeeded"
        log = "".join(service.output)
    assert "will retry" in log  # the scheduler did see the database go away


# -- a full disk under the checkpoints ----------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    directory.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
    mounted = subprocess.run(command, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs root to mount a tmpfs as a full disk: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_full_disk_under_the_checkpoints_fails_the_job_cleanly(tmp_path: Path) -> None:
    # A tiny model's checkpoint is about 1 MiB: none fits in 256 KiB.
    with tiny_tmpfs(tmp_path / "artifacts", "256k") as artifacts:
        env = {"SYMOPT_RAY_NUM_CPUS": "1", "SYMOPT_ARTIFACT_ROOT": str(artifacts)}
        with live_service(tmp_path / "home", env=env) as service:
            api = private_api(service)
            job_id = api.submit(tiny(steps=20, checkpoint={"every": 10, "keep": 1}))
            job = api.finished(job_id)
            checkpoints = artifacts / "jobs" / job_id / "checkpoints"
            assert job["status"] == "failed"
            assert job["attempt"] == 1  # a full disk is no worker crash: a retry would fail alike
            headline = job["error"].splitlines()[0]
            assert headline.startswith("OSError: [Errno 28] No space left on device"), job["error"]
            # Named from the artifact root, which a tenant is not shown (service/redaction.py).
            assert f"<artifacts>/jobs/{job_id}/checkpoints/step_000000010.pt" in headline
            assert str(artifacts) not in job["error"]
            assert list(checkpoints.iterdir()) == []  # no partial file, no temp file left
            assert api.series(job_id, "train_loss")[0] == [5, 10]  # the steps before it stay
            # The service stays up; once space is freed, the next job runs and checkpoints.
            assert service.process.poll() is None
            subprocess.run(["mount", "-o", "remount,size=16m", str(artifacts)], check=True)
            after = api.finished(api.submit(tiny(steps=20, checkpoint={"every": 10, "keep": 1})))
            assert after["status"] == "succeeded", after["error"]
            names = [path.name for path in (artifacts / "jobs" / after["id"] / "checkpoints").iterdir()]
            assert names == ["step_000000020.pt"]
