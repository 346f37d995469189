"""Bodies of the upload routes: datasets, uploaded models, and a model's classification table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from symopt_core.spec import DataSpec, ModelSpec

from ..store.models import Dataset, UploadedModel

__all__ = [
    "ClassifiedParamPublic",
    "ClassifyPublic",
    "ClassifyRequest",
    "DatasetPublic",
    "DatasetsPublic",
    "TokenizerPublic",
    "UploadedModelPublic",
    "UploadedModelsPublic",
]


class TokenizerPublic(BaseModel):
    key: str = Field(description="the token cache entry: GET .../tokenizers/{key} downloads tokenizer.json")
    kind: str = "bpe"
    vocab_size: int
    val_fraction: float = Field(description="it fixed the train split the tokenizer learned from")
    created: float = Field(description="Unix time")


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="name it in a job spec as data: {dataset: <id>}")
    name: str
    format: str
    text_field: str | None
    size_bytes: int = Field(description="bytes uploaded")
    sha256: str = Field(description="of the bytes uploaded")
    documents: int
    characters: int
    created_at: datetime
    tokenizers: list[TokenizerPublic] = Field(
        default_factory=list, description="bpe tokenizers trained on it so far (by jobs that used it)"
    )

    @classmethod
    def of(cls, dataset: Dataset, tokenizers: list[TokenizerPublic] | None = None) -> DatasetPublic:
        return cls.model_validate(dataset).model_copy(update={"tokenizers": tokenizers or []})


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]


class UploadedModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="name it in a job spec as model: {family: hf, path: <id>}")
    name: str
    model_type: str
    architectures: list[str]
    files: list[str]
    has_tokenizer: bool = Field(description="data.tokenizer: model is available")
    size_bytes: int
    sha256: str
    created_at: datetime

    @classmethod
    def of(cls, model: UploadedModel) -> UploadedModelPublic:
        return cls.model_validate(model)


class UploadedModelsPublic(BaseModel):
    data: list[UploadedModelPublic]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    preset: str = Field("symmetric", description="whose rules the table shows")
    mapping: dict[str, str | tuple[str, str]] = Field(
        default_factory=dict, description="as optimizer.mapping in a job spec"
    )
    data: DataSpec | None = Field(None, description="sets the vocabulary when the config has none")


class ClassifiedParamPublic(BaseModel):
    name: str
    shape: list[int]
    param_class: str = Field(alias="class")
    layout: str
    rule: str | None = None
    lr: float | None = Field(None, description="the class's lr at the preset's base lr")

    model_config = ConfigDict(populate_by_name=True)


class ClassifyPublic(BaseModel):
    params: list[ClassifiedParamPublic]
    summary: dict[str, Any] = Field(default_factory=dict, description="parameters and tensors per class")
