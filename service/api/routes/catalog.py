"""What a spec may name, generated from the symopt_core registries (never a second list)."""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel

from symopt_core.data import CORPORA
from symopt_core.models import MODEL_FAMILIES
from symopt_core.optim import RULES
from symopt_core.presets import PRESETS

from ..deps import PrincipalDep

router = APIRouter(prefix="/v1", tags=["catalog"])


class DimPublic(BaseModel):
    name: str
    type: str
    default: Any


class FamilyPublic(BaseModel):
    name: str
    description: str
    sizes: dict[str, dict[str, Any]]
    dims: list[DimPublic]


class PresetPublic(BaseModel):
    name: str
    summary: str
    lr: float
    weight_decay: float
    schedule_free: bool
    rules: dict[str, str]  # parameter class -> rule


class RulePublic(BaseModel):
    name: str
    summary: str
    group: str
    elementwise: bool


class CorpusPublic(BaseModel):
    name: str
    summary: str
    options: dict[str, Any]


Item = TypeVar("Item", bound=BaseModel)


class Catalog(BaseModel, Generic[Item]):  # PEP 695 generics need Python 3.12
    data: list[Item]


@router.get("/models", response_model=Catalog[FamilyPublic])
def list_models_route(principal: PrincipalDep) -> Catalog[FamilyPublic]:
    """Model families, their named sizes and the dims a spec may set."""
    families = []
    for name, family in MODEL_FAMILIES.items():
        dims = [
            DimPublic(name=f.name, type=str(f.type), default=f.default)
            for f in dataclasses.fields(family.config)
        ]
        families.append(
            FamilyPublic(
                name=name,
                description=family.description,
                sizes={k: dict(v) for k, v in family.sizes.items()},
                dims=dims,
            )
        )
    return Catalog(data=families)


@router.get("/presets", response_model=Catalog[PresetPublic])
def list_presets_route(principal: PrincipalDep) -> Catalog[PresetPublic]:
    """Optimizer presets and the rule each gives every parameter class."""
    return Catalog(
        data=[
            PresetPublic(
                name=name,
                summary=p.summary,
                lr=p.lr,
                weight_decay=p.weight_decay,
                schedule_free=p.schedule_free is not None,
                rules={c.value: cell.rule for c, cell in p.cells.items()},
            )
            for name, p in PRESETS.items()
        ]
    )


@router.get("/rules", response_model=Catalog[RulePublic])
def list_rules_route(principal: PrincipalDep) -> Catalog[RulePublic]:
    """Update rules with the symmetry group each is equivariant under."""
    return Catalog(
        data=[
            RulePublic(name=name, summary=r.summary, group=str(r.symmetry), elementwise=r.elementwise)
            for name, r in RULES.items()
        ]
    )


@router.get("/corpora", response_model=Catalog[CorpusPublic])
def list_corpora_route(principal: PrincipalDep) -> Catalog[CorpusPublic]:
    """Corpora by name, with their options; `file:<path>` names a text file under the data root."""
    corpora = [
        CorpusPublic(name=name, summary=c.summary, options=dict(c.defaults)) for name, c in CORPORA.items()
    ]
    corpora.append(
        CorpusPublic(name="file:<path>", summary="a UTF-8 text file under the data root", options={})
    )
    return Catalog(data=corpora)
