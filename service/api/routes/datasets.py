"""Datasets: upload (streamed, size-capped, sha256-checked), list, read, delete; trained tokenizers.

    curl -X POST "$URL/v1/datasets?name=notes&format=jsonl&text_field=text" \\
         -H "Authorization: Bearer $KEY" --data-binary @notes.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse

from symopt_core.data.documents import DocumentsInfo, ingest_documents
from symopt_core.data.token_cache import find_tokenizers

from ...errors import NotFoundError
from ...settings import Settings
from ...store.models import Dataset
from ...store.uploads import delete_upload, get_upload, list_uploads
from ...uploads import Received, remove_quietly, store_upload
from ..deps import LimiterDep, PrincipalDep, SettingsDep, StoreDep
from ..errors import error_responses
from ..upload_schemas import DatasetPublic, DatasetsPublic, TokenizerPublic

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(400, 401, 422, 503))

Format = Literal["text", "jsonl", "parquet", "tar"]
_SHA256 = r"^[0-9a-fA-F]{64}$"


def _tokenizers(settings: Settings, dataset: Dataset) -> list[TokenizerPublic]:
    found = find_tokenizers(settings.assets().token_cache(), dataset.text_sha256)
    return [TokenizerPublic.model_validate(entry) for entry in found]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=error_responses(413, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_dataset_route(
    request: Request,
    principal: PrincipalDep,
    store: StoreDep,
    limiter: LimiterDep,
    settings: SettingsDep,
    format: Annotated[Format, Query(description="text | jsonl | parquet | tar (of text files)")] = "text",
    name: Annotated[str, Query(max_length=200)] = "",
    text_field: Annotated[str, Query(min_length=1, max_length=100, description="jsonl, parquet")] = "text",
    sha256: Annotated[str | None, Query(pattern=_SHA256, description="the file's digest, checked")] = None,
) -> DatasetPublic:
    """Upload a dataset: the file is the request body. It is checked whole (a 422 names the bad
    line, row or member) before it is listed; a cut-off or corrupt upload leaves nothing."""
    limiter.check(principal.key_id, "uploads")

    def ingest(upload: Path, dest: Path) -> DocumentsInfo:
        return ingest_documents(upload, format, dest, text_field=text_field)

    def row_of(dataset_id: str, received: Received, info: DocumentsInfo) -> Dataset:
        return Dataset(
            id=dataset_id,
            tenant_id=principal.tenant_id,
            name=name,
            format=format,
            text_field=text_field if format in ("jsonl", "parquet") else None,
            size_bytes=received.size,
            sha256=received.sha256,
            text_sha256=info.sha256,
            documents=info.documents,
            characters=info.characters,
            text_bytes=info.bytes,
        )

    dataset = await store_upload(
        request, settings, store, kind="datasets", expected_sha256=sha256, unpack=ingest, row_of=row_of
    )
    return DatasetPublic.of(dataset)


@router.get("", response_model=DatasetsPublic)
def list_datasets_route(principal: PrincipalDep, store: StoreDep) -> DatasetsPublic:
    """This tenant's datasets, newest first."""
    with store.read() as session:
        found = list_uploads(session, Dataset, tenant_id=principal.tenant_id)
        return DatasetsPublic(data=[DatasetPublic.of(d) for d in found])


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=error_responses(404))
def get_dataset_route(
    dataset_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> DatasetPublic:
    """One dataset, with the bpe tokenizers trained on it so far."""
    with store.read() as session:
        dataset = get_upload(session, Dataset, tenant_id=principal.tenant_id, upload_id=dataset_id)
        return DatasetPublic.of(dataset, _tokenizers(settings, dataset))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404, 409))
def delete_dataset_route(
    dataset_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> Response:
    """Delete a dataset and its files; refused (409) while an unfinished job, sweep or study uses it."""
    with store.transaction() as session:
        delete_upload(session, Dataset, tenant_id=principal.tenant_id, upload_id=dataset_id)
    remove_quietly(settings.assets().upload_dir("datasets", dataset_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{dataset_id}/tokenizers/{key}",
    response_class=FileResponse,
    responses=error_responses(404, by_reference=True)
    | {
        200: {"content": {"application/json": {}}, "description": "tokenizer.json (the tokenizers library's)"}
    },
)
def download_tokenizer_route(
    dataset_id: str, key: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> FileResponse:
    """A tokenizer trained on this dataset, as the `tokenizers` library's tokenizer.json."""
    with store.read() as session:
        dataset = get_upload(session, Dataset, tenant_id=principal.tenant_id, upload_id=dataset_id)
        found = find_tokenizers(settings.assets().token_cache(), dataset.text_sha256)
    entry = next((e for e in found if e["key"] == key), None)
    if entry is None:
        raise NotFoundError(f"No tokenizer {key} for dataset {dataset_id}")
    return FileResponse(
        Path(entry["path"]), media_type="application/json", filename=f"{dataset_id}-{key}.json"
    )
