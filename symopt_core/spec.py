"""The job spec: what a user submits (YAML, JSON, or a dict), validated by pydantic.

The API reuses these models, so a bad spec is a 422 with the message written here. Nothing in
a spec names code to import or a path outside the data root: models, rules, presets and corpora
are chosen from registries by name.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from .data import CORPORA
from .errors import ConfigError, did_you_mean
from .hf_spec import (
    DATASET_ID_PATTERN,
    MAX_BPE_VOCAB,
    MIN_BPE_VOCAB,
    check_hf_model_fields,
    check_mapping,
    check_relative_path,
    is_custom_family,
    is_hf_family,
)
from .models.registry import build_config
from .optim.options import GROUP_OPTIONS, REMOVED_OPTIONS, Choices, Flag, GroupOption, Pair, Range
from .optim.rules import RULES
from .params.classes import CLASS_ALIASES, ParamClass
from .presets import PRESETS
from .spec_tree import set_path, spec_tree

__all__ = [
    "MAX_SEED",
    "BatchSpec",
    "CheckpointSpec",
    "DataSpec",
    "EvalSpec",
    "JobSpec",
    "ModelSpec",
    "Name",
    "OptimizerSpec",
    "OverrideSpec",
    "RampSpec",
    "ResourcesSpec",
    "ScheduleFreeSpec",
    "ScheduleSpec",
    "describe_validation_error",
    "load_spec",
    "printable",
    "set_path",
    "spec_tree",
]


# Bounds on sizes: anything larger is a typo, not a job.
MAX_DIM = 1 << 20
MAX_VOCAB = 1 << 22
# Seeds reach torch, numpy (< 2**32), Optuna's samplers and a 32-bit database column (a study's
# confirmation seed): one bound that all of them take.
MAX_SEED = 2**31 - 1

# Embedding, overriding and isolating bidi controls: they reorder what a terminal or the dashboard
# shows ("Trojan Source"); right-to-left letters themselves are fine.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(value: str, what: str = "name") -> str:
    """`value`, unless it holds a control character (NUL included: PostgreSQL rejects it in text),
    a lone surrogate (not encodable) or a bidi override; emoji and any script are accepted."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            raise ValueError(
                f"{what} contains U+{ord(char):04X} (a control character, lone surrogate or bidi "
                "override); use printable characters: letters of any script, digits, punctuation, emoji"
            )
    return value


Name = Annotated[str, AfterValidator(printable)]


class OmitsUnusedFields(BaseModel):
    """Leaves out of a dump the fields of users' own models and data while they are unused (None,
    or an empty mapping): a spec of a reference model on a corpus dumps as it always has, so stored
    specs, idempotency checks and sweeps see no new keys."""

    _omitted_when_unused: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unused(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        for name in self._omitted_when_unused:
            if name in dumped and dumped[name] in (None, {}):
                del dumped[name]
        return dumped


class _Strict(BaseModel):
    # allow_inf_nan=False: JSON has no NaN or Infinity (Python's parser accepts them, PostgreSQL's
    # jsonb does not), and no bound of a spec means anything at infinity.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(OmitsUnusedFields):
    """A reference family and a named size, where any other key is a dim of that family
    (n_layers, d_model, ...); or `family: hf`, a transformers causal LM built from an inline
    `config` (random init) or loaded from `path` (an uploaded model's id, or a directory under the
    operator's model root)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    _omitted_when_unused: ClassVar[tuple[str, ...]] = ("config", "path")

    family: str = Field(
        description="gpt2 | qwen3 | gemma3 | olmoe | gpt-oss | hf (a transformers model) | custom (a model "
        "your own script builds: agent sweeps and studies only)"
    )
    size: str | None = Field(None, description="tiny | small | a paper shape; None: the family defaults")
    config: dict[str, Any] | None = Field(
        None,
        description="family hf: a transformers config, `model_type` plus its fields "
        "(AutoConfig.for_model), trained from a seeded random init",
    )
    path: str | None = Field(
        None,
        max_length=300,
        description="family hf: an uploaded model (mdl_...) or a directory under the model root, "
        "loaded with from_pretrained from local files",
    )

    @property
    def dims(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def is_hf(self) -> bool:
        return is_hf_family(self.family)

    @property
    def is_custom(self) -> bool:
        return is_custom_family(self.family)

    @model_validator(mode="after")
    def _known_family_size_and_dims(self) -> ModelSpec:
        if self.is_hf:
            check_hf_model_fields(self.config, self.path, self.size, self.dims)
            return self
        if self.is_custom:
            _check_custom_model(self)
            return self
        if self.config is not None or self.path is not None:
            raise ValueError(
                f"model.config and model.path are for family 'hf' (a transformers model), not {self.family!r}"
            )
        for name, value in self.dims.items():
            limit = MAX_VOCAB if name == "vocab_size" else MAX_DIM
            if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                raise ValueError(f"model.{name}={value} is beyond what symopt trains (at most {limit})")
        try:
            build_config(self.family, self.size, **self.dims)
        except (ConfigError, TypeError) as error:
            raise ValueError(str(error)) from None
        return self


def _check_custom_model(model: ModelSpec) -> None:
    """family custom: the user's script builds the model; the spec may only describe its width."""
    if model.config is not None or model.path is not None or model.size is not None:
        raise ValueError(
            "model.family 'custom' is a model your own script builds: it takes no size, config or path "
            "(at most a `d_model` dim, which the auto lr range of adamw uses)"
        )
    for name, value in model.dims.items():
        if name != "d_model":
            raise ValueError(f"model.{name}: a custom model describes at most its width, model.d_model")
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIM:
            raise ValueError(f"model.d_model={value!r}: give the width as an integer in [1, {MAX_DIM}]")


class DataSpec(OmitsUnusedFields, _Strict):
    _omitted_when_unused: ClassVar[tuple[str, ...]] = ("corpus", "dataset", "vocab_size")

    corpus: str | None = Field(
        None,
        max_length=300,
        description="a registered corpus, or file:<path under the data root>; "
        "None: shakespeare, unless `dataset` is given",
    )
    dataset: str | None = Field(
        None, pattern=DATASET_ID_PATTERN, description="an uploaded dataset (ds_...), instead of a corpus"
    )
    tokenizer: Literal["char", "byte", "bpe", "model"] = Field(
        "char",
        description="char | byte | bpe (byte-level BPE trained on the train split, `vocab_size` tokens) | "
        "model (the tokenizer of the hf model at model.path)",
    )
    vocab_size: int | None = Field(
        None, ge=MIN_BPE_VOCAB, le=MAX_BPE_VOCAB, description="bpe only: the trained vocabulary's size"
    )
    seq_len: PositiveInt = Field(256, le=131_072)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    options: dict[str, int | float | bool] = Field(
        default_factory=dict, max_length=16, description="corpus options (modular: p, seed, n_examples)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shakespeare_by_default(cls, values: Any) -> Any:
        if isinstance(values, Mapping) and values.get("corpus") is None and values.get("dataset") is None:
            return {**values, "corpus": "shakespeare"}
        return values

    @model_validator(mode="after")
    def _known_corpus(self) -> DataSpec:
        if self.tokenizer == "bpe" and self.vocab_size is None:
            raise ValueError(
                f"data.tokenizer 'bpe' needs data.vocab_size (the size of the trained vocabulary, "
                f"{MIN_BPE_VOCAB}..{MAX_BPE_VOCAB}), e.g. 8192"
            )
        if self.tokenizer != "bpe" and self.vocab_size is not None:
            raise ValueError(
                f"data.vocab_size is the size of a trained bpe vocabulary; tokenizer {self.tokenizer!r} "
                "has its own: remove it (model.vocab_size pads the embedding)"
            )
        if self.dataset is not None:
            if self.corpus is not None:
                raise ValueError("data: give a corpus or a dataset, not both")
            if self.options:
                raise ValueError("data.options are corpus options; an uploaded dataset takes none")
            return self
        assert self.corpus is not None  # the before-validator's default
        printable(self.corpus, "data.corpus")
        if self.corpus.startswith("file:"):
            check_relative_path(
                self.corpus.removeprefix("file:"), "corpus file", "data root", "file:books/moby_dick.txt"
            )
            return self
        if self.corpus not in CORPORA:
            raise ValueError(
                f"unknown corpus {self.corpus!r}; valid corpora: {', '.join(CORPORA)}, or file:<path>"
            )
        unknown = set(self.options) - set(CORPORA[self.corpus].defaults)
        if unknown:
            valid = ", ".join(CORPORA[self.corpus].defaults) or "none"
            raise ValueError(
                f"unknown option(s) {', '.join(sorted(unknown))} for corpus {self.corpus!r}; valid: {valid}"
            )
        return self


class _OverrideKeys(_Strict):
    """Per-class settings; `lr` is absolute, `lr_mult` multiplies the preset's base lr, `lr_scale`
    multiplies the class's own lr (its default, or what `lr` / `lr_mult` made it). The group
    options beside them (momentum, scale, betas, ...) are generated from SymOpt's table."""

    rule: str | None = None
    lr: PositiveFloat | None = None
    lr_mult: PositiveFloat | None = None
    lr_scale: PositiveFloat | None = None
    eo_parity: bool | None = None  # EO's shape factor for the class's rule (sets scale; presets.eo_scale)

    @model_validator(mode="before")
    @classmethod
    def _removed_options(cls, data: Any) -> Any:
        """Stored specs dumped every field, `normuon: null` included: an unset removed option is
        dropped, a set one names its replacement."""
        if not isinstance(data, Mapping):
            return data
        for key, replacement in REMOVED_OPTIONS.items():
            if data.get(key, None) not in (None, False):
                raise ValueError(f"{key} was removed: {replacement}")
        return {k: v for k, v in data.items() if k not in REMOVED_OPTIONS}

    @model_validator(mode="after")
    def _known_rule(self) -> _OverrideKeys:
        if self.rule is not None and self.rule not in RULES:
            raise ValueError(
                f"unknown rule {self.rule!r}{did_you_mean(self.rule, RULES)}; valid rules: {', '.join(RULES)}"
            )
        return self

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _override_field(option: GroupOption) -> tuple[Any, Any]:
    """The optional spec field of one group option: its type, bounds or choices, and doc."""
    values = option.values
    annotation: Any
    bounds: dict[str, Any] = {}
    if isinstance(values, Range):
        annotation = int if values.integer else float
        bounds = _bounds(values)
    elif isinstance(values, Choices):
        annotation = Literal.__getitem__(values.values)
    elif isinstance(values, Flag):
        annotation = bool
    elif isinstance(values, Pair):
        each = Annotated[float, Field(**_bounds(values.each))]
        annotation = tuple[each, each]
    else:
        raise TypeError(f"option {option.name!r} has no values a spec can check; mark it override=False")
    return annotation | None, Field(None, description=option.doc, **bounds)


def _bounds(values: Range) -> dict[str, Any]:
    bounds: dict[str, Any] = {"gt" if values.open_low else "ge": values.low}
    if values.high != math.inf:
        bounds["lt" if values.open_high else "le"] = values.high
    return bounds


if TYPE_CHECKING:  # mypy sees the declared keys; the generated option fields are not typed attributes
    OverrideSpec = _OverrideKeys
else:
    OverrideSpec = create_model(
        "OverrideSpec",
        __base__=_OverrideKeys,
        __doc__=_OverrideKeys.__doc__,
        __module__=__name__,
        **{name: _override_field(option) for name, option in GROUP_OPTIONS.items() if option.override},
    )


_OVERRIDE_NAMES = [c.value for c in ParamClass] + list(CLASS_ALIASES)


class ScheduleFreeSpec(_Strict):
    """The schedule-free wrapper's own settings (ALGORITHMS.md 10); None: the preset's."""

    momentum: float | None = Field(
        None, gt=0.0, lt=1.0, description="interpolation beta of y between z and x"
    )
    weight_lr_power: float | None = Field(
        None, ge=0.0, description="averaging weights lr^power (2: lr-squared)"
    )
    r: float | None = Field(None, ge=0.0, description="averaging weights (t+1)^r")
    weight_decay_at_y: float | None = Field(None, ge=0.0, description="decay computed at y, applied to z")

    def options(self) -> dict[str, float]:
        return self.model_dump(exclude_none=True)


MappingTarget = str | tuple[str, str]


class OptimizerSpec(OmitsUnusedFields, _Strict):
    _omitted_when_unused: ClassVar[tuple[str, ...]] = ("mapping",)

    preset: str = "symmetric"
    lr: PositiveFloat | None = Field(None, description="base lr; None: the preset's default")
    weight_decay: float | None = Field(
        None, ge=0.0, description="decay of hidden matrices; None: preset default"
    )
    overrides: dict[str, str | OverrideSpec] = Field(default_factory=dict, max_length=32)
    schedule_free: ScheduleFreeSpec | None = Field(
        None, description="schedule-free presets only: the wrapper's momentum, averaging weights"
    )
    mapping: dict[str, MappingTarget] = Field(
        default_factory=dict,
        max_length=64,
        description="{parameter name pattern (fnmatch): class, or [class, layout]} for parameters the "
        "classifier does not know; names as the model's named_parameters() gives them",
    )

    @model_validator(mode="after")
    def _known_preset_and_classes(self) -> OptimizerSpec:
        check_mapping(self.mapping)
        if self.preset not in PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}{did_you_mean(self.preset, PRESETS)}; valid presets: "
                f"{', '.join(PRESETS)}"
            )
        if self.schedule_free is not None and not self.is_schedule_free:
            valid = ", ".join(name for name, preset in PRESETS.items() if preset.schedule_free is not None)
            raise ValueError(
                f"optimizer.schedule_free is set but preset {self.preset!r} is not schedule-free; "
                f"schedule-free presets: {valid}"
            )
        for name, value in self.overrides.items():
            if name not in _OVERRIDE_NAMES:
                raise ValueError(
                    f"unknown parameter class {name!r} in overrides; valid: {', '.join(_OVERRIDE_NAMES)}"
                )
            if isinstance(value, str) and value not in RULES:
                raise ValueError(
                    f"unknown rule {value!r} for {name!r}{did_you_mean(value, RULES)}; valid rules: "
                    f"{', '.join(RULES)}"
                )
        return self

    def mapping_options(self) -> dict[str, str | tuple[str, str]]:
        """The mapping as build_optimizer takes it."""
        return dict(self.mapping)

    def override_options(self) -> dict[str, str | dict[str, Any]]:
        return {k: v if isinstance(v, str) else v.options() for k, v in self.overrides.items()}

    @property
    def is_schedule_free(self) -> bool:
        return PRESETS[self.preset].schedule_free is not None


class ScheduleSpec(_Strict):
    kind: Literal["constant", "cosine", "linear", "wsd", "schedule_free"] = "wsd"
    warmup_steps: int = Field(0, ge=0)
    decay_frac: float = Field(0.2, ge=0.0, le=1.0, description="wsd: fraction of steps spent decaying")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final lr / base lr")


class RampSpec(_Strict):
    """Adaptive batch / sequence growth (ALGORITHMS.md 11.2): tokens per step double in stages."""

    start_size: PositiveInt
    start_seq_len: PositiveInt | None = Field(None, description="None: start at data.seq_len")
    c: PositiveFloat | None = Field(
        None, description="c in B·S = c·t^(2/3); None: reach the final batch mid-run"
    )


class BatchSpec(_Strict):
    size: PositiveInt = Field(64, le=65_536)
    micro_size: PositiveInt | None = Field(
        None, description="sequences per forward pass (gradient accumulation)"
    )
    ramp: RampSpec | None = None


class EvalSpec(_Strict):
    every: PositiveInt = 100
    batches: PositiveInt = Field(20, le=100_000)
    batch_size: PositiveInt | None = Field(None, le=65_536, description="None: batch.size")


class CheckpointSpec(_Strict):
    every: int = Field(0, ge=0, description="steps between checkpoints; 0: only the final one")
    keep: PositiveInt = Field(3, le=1_000)


class ResourcesSpec(_Strict):
    """What a job runs on. workers > 1 (or gpus > 1) is one data-parallel group of that many
    ranks, started through Ray Train: one GPU per rank when gpus > 0, `cpus` CPUs per rank,
    the model replicated (DDP) or sharded (FSDP2) as `strategy` says."""

    gpus: int = Field(0, ge=0, le=4096, description="GPUs of the whole job: 0, 1, or one per rank")
    cpus: PositiveInt = Field(1, le=4096, description="CPUs per rank")
    workers: PositiveInt | None = Field(
        None, le=4096, description="data-parallel ranks; default: gpus when gpus > 1, else 1"
    )
    nodes: PositiveInt | None = Field(
        None, le=512, description="with gpus_per_node, a check: gpus = nodes × gpus_per_node"
    )
    gpus_per_node: PositiveInt | None = Field(None, le=64)
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="how 2+ ranks hold the model: ddp (a whole replica each) or fsdp (FSDP2: parameters, "
        "gradients and optimizer state split by rows across the ranks; checkpoints via "
        "torch.distributed.checkpoint); one rank trains the plain model either way",
    )

    @model_validator(mode="after")
    def _one_gpu_per_rank(self) -> ResourcesSpec:
        if (self.nodes is None) != (self.gpus_per_node is None):
            raise ValueError("resources: give nodes and gpus_per_node together")
        if self.nodes is not None and self.gpus_per_node is not None:
            spanned = self.nodes * self.gpus_per_node
            if self.gpus != spanned:
                raise ValueError(
                    f"resources: gpus={self.gpus}, but nodes × gpus_per_node = {spanned}; give gpus={spanned}"
                )
        if self.workers is not None and self.gpus not in (0, 1, self.workers):
            raise ValueError(
                f"resources: gpus={self.gpus} with workers={self.workers}; a data-parallel job has one "
                "GPU per rank (gpus = workers), or runs on CPUs (gpus = 0)"
            )
        if self.workers is not None and self.workers > 1 and self.gpus == 1:
            raise ValueError(f"resources: workers={self.workers} with gpus=1; give gpus={self.workers}")
        return self

    @property
    def ranks(self) -> int:
        return self.workers or max(1, self.gpus)

    @property
    def total_cpus(self) -> int:
        return self.cpus * self.ranks


class JobSpec(_Strict):
    name: Name = Field("", max_length=200)
    model: ModelSpec
    data: DataSpec = DataSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    batch: BatchSpec = BatchSpec()
    steps: PositiveInt = Field(1000, le=100_000_000)
    grad_clip: float | None = Field(1.0, ge=0.0, description="max global grad norm; None or 0: no clipping")
    eval: EvalSpec = EvalSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    resources: ResourcesSpec = ResourcesSpec()
    seed: int = Field(0, ge=0, le=MAX_SEED)
    log_every: PositiveInt = 10
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA"
    )

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        sf_preset, sf_schedule = self.optimizer.is_schedule_free, self.schedule.kind == "schedule_free"
        if sf_preset and self.schedule.kind not in ("schedule_free", "constant"):
            raise ValueError(
                f"preset {self.optimizer.preset!r} is schedule-free: use schedule.kind 'schedule_free' "
                f"(warmup only), not {self.schedule.kind!r}"
            )
        if sf_schedule and not sf_preset:
            raise ValueError(
                f"schedule.kind 'schedule_free' needs a schedule-free preset (sf-normuon, sf-symmetric), "
                f"not {self.optimizer.preset!r}"
            )
        micro = self.batch.micro_size
        if micro is not None and self.batch.size % micro:
            raise ValueError(
                f"batch.size ({self.batch.size}) must be a multiple of batch.micro_size ({micro})"
            )
        self._splits_across_ranks()
        ramp = self.batch.ramp
        if ramp is not None:
            if ramp.start_size > self.batch.size:
                raise ValueError(
                    f"batch.ramp.start_size ({ramp.start_size}) exceeds batch.size ({self.batch.size})"
                )
            if (ramp.start_seq_len or self.data.seq_len) > self.data.seq_len:
                raise ValueError(f"batch.ramp.start_seq_len exceeds data.seq_len ({self.data.seq_len})")
        self._tokenizer_fits_model()
        max_seq_len = self.model.dims.get("max_seq_len")
        if isinstance(max_seq_len, int) and max_seq_len < self.data.seq_len:
            raise ValueError(f"data.seq_len ({self.data.seq_len}) exceeds model.max_seq_len ({max_seq_len})")
        return self

    def _tokenizer_fits_model(self) -> None:
        if self.data.tokenizer == "model" and (not self.model.is_hf or self.model.path is None):
            raise ValueError(
                "data.tokenizer 'model' is the tokenizer of an uploaded or pretrained model: it needs "
                "model.family 'hf' with model.path; otherwise use char, byte or bpe"
            )
        positions = (self.model.config or {}).get("max_position_embeddings")
        if isinstance(positions, int) and not isinstance(positions, bool) and positions < self.data.seq_len:
            raise ValueError(
                f"data.seq_len ({self.data.seq_len}) exceeds model.config.max_position_embeddings "
                f"({positions})"
            )

    def _splits_across_ranks(self) -> None:
        """A data-parallel job's batches split into equal shares, one per rank (micro-batches
        apply within a rank's share)."""
        ranks = self.resources.ranks
        if ranks == 1:
            return
        eval_size = self.eval.batch_size or self.batch.size
        for what, size in (("batch.size", self.batch.size), ("the eval batch size", eval_size)):
            if size % ranks:
                raise ValueError(
                    f"{what} ({size}) must be a multiple of the {ranks} data-parallel ranks "
                    "(resources.workers / gpus)"
                )
        micro = self.batch.micro_size
        if micro is not None and (self.batch.size // ranks) % micro:
            raise ValueError(
                f"batch.micro_size ({micro}) must divide each rank's share of the batch "
                f"({self.batch.size} / {ranks} = {self.batch.size // ranks})"
            )
        if self.batch.ramp is not None:
            raise ValueError(
                "batch.ramp is not supported on more than one rank yet; remove it or use one rank"
            )


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, `field.path: message`, without pydantic's links and echoed input."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "spec"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def load_spec(
    source: str | Path | Mapping[str, Any] | JobSpec, overrides: Mapping[str, Any] | None = None
) -> JobSpec:
    """A JobSpec from a YAML/JSON path, a dict or a JobSpec, with dotted-path overrides applied."""
    return JobSpec.model_validate(spec_tree(source, overrides))
