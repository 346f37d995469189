"""Uploaded datasets and models: rows of the tenant that owns them, and what uses them.

The files live under the artifact root (service/uploads.py writes them); a row is added only
once its files are complete, so a listed upload is always usable.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ConflictError
from .models import Dataset, Job, Study, Sweep, UploadedModel
from .owned import get_owned
from .status import JobStatus, SweepStatus

__all__ = ["add_upload", "delete_upload", "get_upload", "list_uploads", "users_of"]

Upload = TypeVar("Upload", Dataset, UploadedModel)

_KIND = {Dataset: "dataset", UploadedModel: "model"}
_ACTIVE_JOBS = [s.value for s in JobStatus if not s.terminal]
_ACTIVE_SWEEPS = [s.value for s in SweepStatus if not s.terminal]


def add_upload(session: Session, upload: Upload) -> Upload:
    session.add(upload)
    session.flush()
    return upload


def get_upload(session: Session, model: type[Upload], *, tenant_id: str, upload_id: str) -> Upload:
    """The tenant's upload; another tenant's is a NotFoundError, as a missing one."""
    return get_owned(session, model, tenant_id=tenant_id, object_id=upload_id, kind=_KIND[model])


def list_uploads(session: Session, model: type[Upload], *, tenant_id: str) -> list[Upload]:
    table: Any = model
    query = select(model).where(table.tenant_id == tenant_id).order_by(table.created_at.desc(), table.id)
    return list(session.scalars(query))


def _uses(spec: dict[str, Any], upload_id: str) -> bool:
    """Whether a job spec (or a sweep's or study's base job) names `upload_id`."""
    base = spec.get("base", spec)
    data, model = base.get("data") or {}, base.get("model") or {}
    return upload_id in (data.get("dataset"), model.get("path"))


def users_of(session: Session, *, tenant_id: str, upload_id: str) -> list[str]:
    """The unfinished jobs, sweeps and studies of the tenant whose spec names the upload."""
    users = []
    for table, active in ((Job, _ACTIVE_JOBS), (Sweep, _ACTIVE_SWEEPS), (Study, _ACTIVE_SWEEPS)):
        rows = session.execute(
            select(table.id, table.spec).where(table.tenant_id == tenant_id, table.status.in_(active))
        )
        kind = table.__name__.lower()
        users += [f"{kind} {row.id}" for row in rows if _uses(row.spec, upload_id)]
    return users


def delete_upload(session: Session, model: type[Upload], *, tenant_id: str, upload_id: str) -> Upload:
    """Remove the row (the caller removes the files after the commit); a ConflictError while an
    unfinished job, sweep or study uses it."""
    upload = get_upload(session, model, tenant_id=tenant_id, upload_id=upload_id)
    users = users_of(session, tenant_id=tenant_id, upload_id=upload_id)
    if users:
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise ConflictError(
            f"{_KIND[model].capitalize()} {upload_id} is used by {shown}: cancel them or wait for them "
            "to finish, then delete it"
        )
    session.delete(upload)
    return upload
