"""Users' own models: upload a transformers model directory (a tar), list, read, delete; and the
classification table of any model spec, so a user sees which rule each parameter gets before
spending GPU time.

    tar -cf model.tar -C my-model .
    curl -X POST "$URL/v1/models/uploads?name=my-model" -H "Authorization: Bearer $KEY" \\
         --data-binary @model.tar
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from symopt_core.errors import ConfigError

from ...store.models import UploadedModel
from ...store.uploads import delete_upload, get_upload, list_uploads
from ...uploads import ModelDirectory, Received, remove_quietly, store_upload, unpack_model
from ..deps import LimiterDep, PrincipalDep, SettingsDep, StoreDep
from ..errors import error_responses
from ..upload_schemas import (
    ClassifiedParamPublic,
    ClassifyPublic,
    ClassifyRequest,
    UploadedModelPublic,
    UploadedModelsPublic,
)

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(400, 401, 422, 503))

_SHA256 = r"^[0-9a-fA-F]{64}$"


@router.post(
    "/uploads",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadedModelPublic,
    responses=error_responses(413, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_model_route(
    request: Request,
    principal: PrincipalDep,
    store: StoreDep,
    limiter: LimiterDep,
    settings: SettingsDep,
    name: Annotated[str, Query(max_length=200)] = "",
    sha256: Annotated[str | None, Query(pattern=_SHA256, description="the tar's digest, checked")] = None,
) -> UploadedModelPublic:
    """Upload a model directory as a tar (or .tar.gz) of what save_pretrained wrote: config.json,
    weights, optionally the tokenizer. Its config must be a transformers causal LM."""
    limiter.check(principal.key_id, "uploads")

    def row_of(model_id: str, received: Received, unpacked: ModelDirectory) -> UploadedModel:
        return UploadedModel(
            id=model_id,
            tenant_id=principal.tenant_id,
            name=name,
            size_bytes=received.size,
            sha256=received.sha256,
            model_type=unpacked.model_type,
            architectures=unpacked.architectures,
            files=unpacked.files,
            has_tokenizer=unpacked.has_tokenizer,
        )

    model = await store_upload(
        request, settings, store, kind="models", expected_sha256=sha256, unpack=unpack_model, row_of=row_of
    )
    return UploadedModelPublic.of(model)


@router.get("/uploads", response_model=UploadedModelsPublic)
def list_uploaded_models_route(principal: PrincipalDep, store: StoreDep) -> UploadedModelsPublic:
    """This tenant's uploaded models, newest first."""
    with store.read() as session:
        found = list_uploads(session, UploadedModel, tenant_id=principal.tenant_id)
        return UploadedModelsPublic(data=[UploadedModelPublic.of(m) for m in found])


@router.get("/uploads/{model_id}", response_model=UploadedModelPublic, responses=error_responses(404))
def get_uploaded_model_route(model_id: str, principal: PrincipalDep, store: StoreDep) -> UploadedModelPublic:
    with store.read() as session:
        return UploadedModelPublic.of(
            get_upload(session, UploadedModel, tenant_id=principal.tenant_id, upload_id=model_id)
        )


@router.delete(
    "/uploads/{model_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404, 409)
)
def delete_uploaded_model_route(
    model_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> Response:
    """Delete a model and its files; refused (409) while an unfinished job, sweep or study uses it."""
    with store.transaction() as session:
        delete_upload(session, UploadedModel, tenant_id=principal.tenant_id, upload_id=model_id)
    remove_quietly(settings.assets().upload_dir("models", model_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(":classify", response_model=ClassifyPublic, responses=error_responses(404, 429))
def classify_model_route(
    body: ClassifyRequest,
    principal: PrincipalDep,
    store: StoreDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> ClassifyPublic:
    """The class, layout and rule of every parameter of a model spec (built on the meta device:
    no memory, whatever its size); a 422 names the parameters no class claims and the mapping to add."""
    limiter.check(principal.key_id, "classifications")
    from symopt_core.models.hf_check import describe
    from symopt_core.presets import PRESETS

    if body.preset not in PRESETS:
        raise ConfigError(f"unknown preset {body.preset!r}; valid presets: {', '.join(PRESETS)}")
    path = body.model.path
    if path is not None and path.startswith("mdl_"):
        with store.read() as session:
            get_upload(session, UploadedModel, tenant_id=principal.tenant_id, upload_id=path)
    vocab_size = body.data.vocab_size if body.data is not None else None
    rows = describe(body.model, body.preset, dict(body.mapping), vocab_size, assets=settings.assets())
    summary: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = summary.setdefault(str(row["class"]), {"tensors": 0, "params": 0})
        entry["tensors"] += 1
        entry["params"] += _numel(row["shape"])
    return ClassifyPublic(params=[ClassifiedParamPublic.model_validate(row) for row in rows], summary=summary)


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
