"""SQLAlchemy models of the store. Every table is prefixed `symopt_`: Optuna keeps its own
tables (`studies`, `trials`, ..., and `alembic_version`) in the same database for sweeps.

Schema changes go through Alembic revisions in `migrations/`; never `create_all` in the service.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "Base",
    "Dataset",
    "Job",
    "JobEvent",
    "MetricPoint",
    "Study",
    "Sweep",
    "Tenant",
    "UploadedModel",
    "new_id",
    "utcnow",
]

# Deterministic constraint names, so Alembic revisions can name what they drop.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
JsonType = JSON().with_variant(JSONB(), "postgresql")


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "symopt_tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """An API key: the public id is stored plain, the secret only as a SHA-256 hash."""

    __tablename__ = "symopt_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the key's public id
    tenant_id: Mapped[str] = mapped_column(ForeignKey("symopt_tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Study(Base):
    """A comparison study: one sweep per candidate (stage 1), then k seeded runs of each
    candidate's best configuration (stage 2, jobs linked by study, candidate and seed)."""

    __tablename__ = "symopt_studies"
    __table_args__ = (
        Index("ix_symopt_studies_tenant_created", "tenant_id", "created_at"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_symopt_studies_tenant_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("symopt_tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(20), default="tuning")  # tuning | confirming | done
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)  # when finished
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the controller running it
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Sweep(Base):
    __tablename__ = "symopt_sweeps"
    __table_args__ = (
        Index("ix_symopt_sweeps_tenant_created", "tenant_id", "created_at"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_symopt_sweeps_tenant_idempotency"),
        # one tuning sweep per study candidate
        UniqueConstraint("study_id", "study_candidate", name="uq_symopt_sweeps_study_candidate"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("symopt_tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # the search space each preset's study uses ("auto" resolved): {preset: {path: range}}
    resolved_space: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    study_name: Mapped[str] = mapped_column(String(100), unique=True)
    n_trials: Mapped[int] = mapped_column(Integer)
    best_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    study_id: Mapped[str | None] = mapped_column(
        ForeignKey("symopt_studies.id", ondelete="CASCADE"), nullable=True, index=True
    )
    study_candidate: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the controller running it
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Job(Base):
    __tablename__ = "symopt_jobs"
    __table_args__ = (
        Index("ix_symopt_jobs_tenant_created", "tenant_id", "created_at"),
        Index("ix_symopt_jobs_tenant_status", "tenant_id", "status"),
        Index("ix_symopt_jobs_status_created", "status", "created_at"),  # the scheduler's queue
        Index("ix_symopt_jobs_executor_status", "executor", "status"),  # agents' leases
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_symopt_jobs_tenant_idempotency"),
        # one job per trial: a restarted sweep controller can never start a trial twice
        UniqueConstraint("sweep_id", "trial_study", "trial_number", name="uq_symopt_jobs_sweep_trial"),
        # one confirmation run per study, candidate and seed: a restarted controller never runs one twice
        UniqueConstraint("study_id", "study_candidate", "study_seed", name="uq_symopt_jobs_study_run"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("symopt_tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # starts so far
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # attempts lost to crashes
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)  # failures allowed before `failed`
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the scheduler running it
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("symopt_sweeps.id", ondelete="CASCADE"), nullable=True, index=True
    )
    trial_study: Mapped[str | None] = mapped_column(String(140), nullable=True)  # the Optuna study
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the trial's number in it
    pruned_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # training tokens, if pruned
    study_id: Mapped[str | None] = mapped_column(
        ForeignKey("symopt_studies.id", ondelete="CASCADE"), nullable=True, index=True
    )
    study_candidate: Mapped[str | None] = mapped_column(String(64), nullable=True)
    study_seed: Mapped[int | None] = mapped_column(Integer, nullable=True)  # a confirmation run's seed
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    queued_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it has not started
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)  # newest step reported
    # The newest seq given to one of its metric points (MetricPoint.seq): the writers' counter.
    metrics_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    best_val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    diverged_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # service: the scheduler runs it on Ray; agents: a user's own script claims it over HTTP and
    # holds it under a lease (the token's SHA-256, its expiry and length), renewed by its reports.
    executor: Mapped[str] = mapped_column(String(16), default="service", server_default="service")
    lease_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agent_host: Mapped[str | None] = mapped_column(String(200), nullable=True)  # who holds (held) it
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)  # an agent's stored one


class MetricPoint(Base):
    """One value of one named series at one step. Non-finite values are stored as value NULL
    plus their kind ("nan", "inf", "-inf"), as Optuna's storage does; finite ones have kind "".

    `seq` numbers a job's points in the order their writes committed (a rewritten point takes a
    new one): a reader that has every point up to seq N asks for `seq > N` and misses nothing."""

    __tablename__ = "symopt_metric_points"
    __table_args__ = (
        Index("ix_symopt_metric_points_job_step", "job_id", "step"),
        Index("ix_symopt_metric_points_job_seq", "job_id", "seq", unique=True),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("symopt_jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    kind: Mapped[str] = mapped_column(String(4), default="")
    wall_time: Mapped[float] = mapped_column(Float)  # seconds since the epoch
    seq: Mapped[int] = mapped_column(BigInteger)  # from 1, per job (Job.metrics_seq hands them out)


class JobEvent(Base):
    """Status changes, evaluations, checkpoints and log lines of a job, in order (`id`)."""

    __tablename__ = "symopt_job_events"
    __table_args__ = (Index("ix_symopt_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("symopt_jobs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class Dataset(Base):
    """A tenant's uploaded dataset: its files are under <artifact root>/datasets/<id>/ (the
    canonical documents that symopt_core.data.documents wrote); `text_sha256` identifies their
    text, so every job and trial on it shares one tokenized cache."""

    __tablename__ = "symopt_datasets"
    __table_args__ = (Index("ix_symopt_datasets_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("symopt_tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    format: Mapped[str] = mapped_column(String(20))  # text | jsonl | parquet | tar
    text_field: Mapped[str | None] = mapped_column(String(100), nullable=True)  # jsonl, parquet
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # of the upload
    sha256: Mapped[str] = mapped_column(String(64))  # of the upload
    text_sha256: Mapped[str] = mapped_column(String(64))  # of the canonical documents
    documents: Mapped[int] = mapped_column(BigInteger)
    characters: Mapped[int] = mapped_column(BigInteger)
    text_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UploadedModel(Base):
    """A tenant's uploaded transformers model directory (config, weights, maybe its tokenizer),
    under <artifact root>/models/<id>/; jobs name it as `model: {family: hf, path: <id>}`."""

    __tablename__ = "symopt_models"
    __table_args__ = (Index("ix_symopt_models_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("symopt_tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # of the upload (a tar)
    sha256: Mapped[str] = mapped_column(String(64))  # of the upload
    model_type: Mapped[str] = mapped_column(String(100))
    architectures: Mapped[list[str]] = mapped_column(JsonType, default=list)
    files: Mapped[list[str]] = mapped_column(JsonType, default=list)
    has_tokenizer: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
