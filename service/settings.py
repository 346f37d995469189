"""Service settings, from SYMOPT_* environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from symopt_core.assets import Assets

__all__ = ["Settings"]


class Settings(BaseSettings):
    """One place for every knob of the API, store and scheduler."""

    model_config = SettingsConfigDict(env_prefix="SYMOPT_", extra="ignore")

    home: Path = Field(
        Path.home() / ".symopt", description="embedded default: database, artifacts, credentials"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; None: SQLite file in `home` (embedded)"
    )
    artifact_root: Path | None = Field(None, description="checkpoints and run files; None: <home>/artifacts")
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(64 * 1024, description="largest accepted request body (a job spec), in bytes")
    job_rate_per_minute: float = Field(120.0, description="job/sweep creations per API key per minute")
    job_rate_burst: int = Field(30, description="creations a key may make at once before the rate applies")
    metrics_default_limit: int = 10_000
    metrics_max_limit: int = 100_000
    sse_poll_seconds: float = Field(0.5, description="how often the event stream looks for new points")
    data_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("SYMOPT_DATA_DIR", "data_dir"),
        description="corpora, passed to workers",
    )
    model_root: Path | None = Field(
        None,
        description="pretrained transformers model directories a spec may name as model.path "
        "(relative to this root); uploads need none",
    )
    max_upload_bytes: int = Field(
        2 * 1024**3, description="largest dataset or model upload, in bytes (streamed to disk)"
    )
    agent_lease_seconds: int = Field(
        60,
        ge=5,
        le=3600,
        description="an agent's lease on a trial when its claim names none (renewed by reports)",
    )
    agent_poll_seconds: float = Field(
        2.0, gt=0, description="how long an agent waits (retry_after) when no trial is waiting for it"
    )
    # What one job may ask for (checked at submission: a 422 that states the limit); None: no limit.
    max_model_params: int | None = Field(
        100_000_000_000, description="parameters of a job's model (counted on the meta device)"
    )
    max_tokens_per_step: int | None = Field(
        1 << 24, description="tokens of one training or evaluation batch (batch size × seq_len)"
    )
    max_job_tokens: int | None = Field(
        10**13, description="training tokens of one job (steps × batch tokens)"
    )
    max_checkpoint_bytes: int | None = Field(
        10**12, description="disk a job's kept checkpoints may take (about 16 bytes per parameter each)"
    )
    max_job_gpus: int | None = Field(None, description="GPUs one job may ask for (e.g. the largest node's)")
    max_job_cpus: int | None = Field(None, description="CPUs one job may ask for, all ranks together")
    # Per tenant (a 429 that names the quota); None: no quota.
    quota_active_jobs: int | None = Field(
        2_000, description="a tenant's queued, running and cancelling jobs at once (sweep trials included)"
    )
    quota_queued_jobs: int | None = Field(1_000, description="a tenant's jobs waiting in the queue")
    quota_gpu_hours: float | None = Field(None, description="GPU-hours a tenant's jobs may have used in all")

    # scheduler
    run_scheduler: bool = Field(False, description="run the scheduler in this process (symopt serve does)")
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("SYMOPT_RAY_ADDRESS", "RAY_ADDRESS", "ray_address"),
        description="an existing Ray cluster; None: start a local one",
    )
    ray_num_cpus: int | None = Field(None, description="CPUs of the local Ray cluster (default: all)")
    warm_workers: bool = Field(
        True,
        description="one-process jobs start as forks of a warm process per node (torch and symopt "
        "imported once: worker/forkserver.py); false: a fresh Ray worker process per job",
    )
    scheduler_poll_seconds: float = Field(0.25, description="how often the scheduler looks at the queue")
    heartbeat_seconds: float = Field(2.0, description="how often a scheduler marks its running jobs alive")
    orphan_after_seconds: float = Field(
        30.0, description="a running job without heartbeat this long is requeued"
    )
    cancel_grace_seconds: float = Field(20.0, description="then a cancelled run is stopped by force")
    max_attempts: int = Field(3, ge=1, description="worker failures a job survives before it fails")
    ray_dashboard: bool = Field(
        False,
        description="start Ray's own dashboard with the local Ray (on 127.0.0.1; needs ray[default]); "
        "its URL goes to the service log",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="the service log (HTTP access and job lifecycle lines): text, or one JSON object a line",
    )

    @property
    def embedded(self) -> bool:
        """True when the service owns its database (a SQLite file it may migrate itself)."""
        return self.database_url is None or self.database_url.startswith("sqlite")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'symopt.db'}"

    def resolved_artifact_root(self) -> Path:
        return self.artifact_root or self.home / "artifacts"

    def assets(self) -> Assets:
        """Where workers find corpora, model directories, uploads and the token cache."""
        return Assets(
            data_root=self.data_dir, model_root=self.model_root, uploads=self.resolved_artifact_root()
        )

    def job_run_dir(self, job_id: str) -> Path:
        """Where a job's run files go: its checkpoints are in `checkpoints/` under it."""
        return self.resolved_artifact_root() / "jobs" / job_id
