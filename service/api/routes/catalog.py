"""What a spec may name, generated from the symopt_core registries (never a second list)."""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel, Field

from symopt_core.data import CORPORA
from symopt_core.hf_spec import KNOWN_LAYOUTS
from symopt_core.models import MODEL_FAMILIES
from symopt_core.optim import RULES, Rule
from symopt_core.optim.options import options_read_by
from symopt_core.params import ParamClass
from symopt_core.presets import PRESETS, Preset

from ..deps import PrincipalDep
from ..errors import error_responses

router = APIRouter(prefix="/v1", tags=["catalog"], responses=error_responses(400, 401, 503))


class DimPublic(BaseModel):
    name: str
    type: str
    default: Any


class FamilyPublic(BaseModel):
    name: str
    description: str
    sizes: dict[str, dict[str, Any]]
    dims: list[DimPublic]
    architectures: list[str] = Field(
        default_factory=list,
        description="family hf: the transformers model types whose layouts the classifier knows by name "
        "(any other causal LM trains too, with optimizer.mapping for parameters no rule claims)",
    )


class ClassSettingsPublic(BaseModel):
    """What a preset gives one parameter class (a spec's `optimizer.overrides.<class>` changes it)."""

    rule: str
    interleaved_rule: str | None  # the rule for fused gate/up stacks stored interleaved (gpt-oss)
    lr_mult: float  # the class's lr is lr_mult × the base lr (× √d when lr_mult_times_sqrt_d)
    lr_mult_times_sqrt_d: bool  # embeddings and heads: × √d, d the row length of the [V, d] matrix
    lr: float | None  # lr_mult × the preset's lr; None when it depends on d
    options: dict[str, Any]  # momentum, nesterov, scale, polar_method, betas, ...


class PresetPublic(BaseModel):
    name: str
    summary: str
    lr: float  # the base lr (hidden matrices; AdamW's own lr for adamw)
    weight_decay: float  # decay of hidden matrices (every 2-D class for adamw); others take none
    schedule_free: bool
    schedule_free_options: dict[str, Any] | None  # ScheduleFree(...) arguments when wrapped
    head_wise: bool  # attention q/k/v/o updated per head
    adamw_share: float
    rules: dict[str, str]  # parameter class -> rule
    classes: dict[str, ClassSettingsPublic]
    matrix_options: dict[str, Any]  # a class overridden to a matrix rule takes these
    adamw_options: dict[str, Any]  # a class overridden to adamw takes these


class RulePublic(BaseModel):
    name: str
    summary: str
    group: str
    elementwise: bool
    view: str  # "paired": fused gate/up rows joined as [gate_j, up_j]
    transposable: bool  # D(Mᵀ) = D(M)ᵀ
    neuron_norm: bool  # NorMuon's row normalization after the direction (always on)
    shape_scaled: bool  # the `scale` option applies (the rule has a natural per-entry RMS)
    options: dict[str, Any]  # the param-group options it reads, with SymOpt's defaults


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
    families.append(
        FamilyPublic(
            name="hf",
            description="any transformers causal LM: model.config ({model_type, ...fields}, a seeded random "
            "init) or model.path (an uploaded model mdl_..., or a directory under the model root); "
            "POST /v1/models:classify shows its classification",
            sizes={},
            dims=[],
            architectures=list(KNOWN_LAYOUTS),
        )
    )
    return Catalog(data=families)


def _class_settings(preset: Preset, param_class: ParamClass) -> ClassSettingsPublic:
    cell = preset.cells[param_class]
    lr = preset.lr_rule(param_class, cell.rule)
    return ClassSettingsPublic(
        rule=cell.rule,
        interleaved_rule=cell.interleaved_rule,
        lr_mult=lr.mult,
        lr_mult_times_sqrt_d=lr.sqrt_d,
        lr=None if lr.sqrt_d else preset.lr * lr.mult,
        options=dict(cell.options),
    )


def _preset_public(name: str, preset: Preset) -> PresetPublic:
    return PresetPublic(
        name=name,
        summary=preset.summary,
        lr=preset.lr,
        weight_decay=preset.weight_decay,
        schedule_free=preset.schedule_free is not None,
        schedule_free_options=dict(preset.schedule_free) if preset.schedule_free is not None else None,
        head_wise=preset.head_wise,
        adamw_share=preset.adamw_share,
        rules={c.value: cell.rule for c, cell in preset.cells.items()},
        classes={c.value: _class_settings(preset, c) for c in preset.cells},
        matrix_options=dict(preset.matrix_options),
        adamw_options=dict(preset.adamw_options),
    )


@router.get("/presets", response_model=Catalog[PresetPublic])
def list_presets_route(principal: PrincipalDep) -> Catalog[PresetPublic]:
    """Optimizer presets: base lr and decay, and each parameter class's rule, lr and options."""
    return Catalog(data=[_preset_public(name, p) for name, p in PRESETS.items()])


def _rule_options(rule: Rule) -> dict[str, Any]:
    """The param-group options `rule`'s step reads, with SymOpt's defaults (optim/options.py)."""
    return {name: option.default for name, option in options_read_by(rule).items()}


@router.get("/rules", response_model=Catalog[RulePublic])
def list_rules_route(principal: PrincipalDep) -> Catalog[RulePublic]:
    """Update rules: the symmetry group each is equivariant under, and the options it reads."""
    return Catalog(
        data=[
            RulePublic(
                name=name,
                summary=r.summary,
                group=str(r.symmetry),
                elementwise=r.elementwise,
                view=r.view,
                transposable=r.transposable,
                neuron_norm=r.neuron_norm,
                shape_scaled=r.natural_rms is not None,
                options=_rule_options(r),
            )
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
