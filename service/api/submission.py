"""What a submitted job needs beyond its spec's own validation: the uploads it names belong to the
tenant and fit it, and a transformers model builds and classifies (on the meta device).

Called by the job, sweep and study routes, which FastAPI runs in its thread pool: building a
transformers config and classifying a model takes from milliseconds to seconds, never on the
event loop.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from symopt_core.errors import ConfigError
from symopt_core.spec import JobSpec

from ..errors import NotFoundError
from ..settings import Settings
from ..store.models import Dataset, UploadedModel
from ..store.uploads import Upload, get_upload
from .quotas import check_quotas

__all__ = ["check_limits", "check_submission"]

# What a kept checkpoint holds per parameter: fp32 weights, momentum and two Adam moments at most.
CHECKPOINT_BYTES_PER_PARAM = 16


def check_submission(
    session: Session, *, tenant_id: str, spec: JobSpec, settings: Settings, executor: str = "service"
) -> None:
    """A ConfigError (422) naming what to fix when the spec's dataset or model is not the tenant's,
    the dataset cannot fill one sequence of each split, the model does not build, or the service
    is asked to run a model only the user's own script can build; a ConfigError stating the limit
    when the spec is over one the operator set; a QuotaExceededError (429) naming the quota the
    tenant has used up."""
    check_quotas(session, tenant_id=tenant_id, settings=settings)
    check_limits(spec, settings)
    if spec.model.is_custom and executor != "agents":
        raise ConfigError(
            "model.family 'custom' is a model your own training script builds, which the service cannot "
            "run as a job: submit a sweep or study with `executor: agents` and run `symopt agent ID -- "
            "python your_script.py`"
        )
    if spec.data.dataset is not None:
        _check_dataset(session, tenant_id, spec)
    if spec.model.is_hf:
        path = spec.model.path
        if path is not None and path.startswith("mdl_"):
            model = _owned(session, UploadedModel, tenant_id, path, "model.path", "symopt models upload")
            if spec.data.tokenizer == "model" and not model.has_tokenizer:
                raise ConfigError(
                    f"data.tokenizer 'model': the uploaded model {path} has no tokenizer files; upload the "
                    "model directory with its tokenizer (save_pretrained of both), or use char, byte or bpe"
                )
        from symopt_core.models.hf_check import check_hf_model

        check_hf_model(spec, settings.assets())


def _owned(
    session: Session, model: type[Upload], tenant_id: str, upload_id: str, field: str, command: str
) -> Upload:
    try:
        return get_upload(session, model, tenant_id=tenant_id, upload_id=upload_id)
    except NotFoundError:
        raise ConfigError(
            f"{field}: no upload {upload_id} (upload it with `{command}`, or check the id)"
        ) from None


def _check_dataset(session: Session, tenant_id: str, spec: JobSpec) -> None:
    assert spec.data.dataset is not None
    found = _owned(session, Dataset, tenant_id, spec.data.dataset, "data.dataset", "symopt datasets upload")
    # A byte-level tokenizer makes at most one token per byte (plus one between documents): an
    # upper bound on the tokens of each split, known before anything is tokenized.
    most = found.text_bytes + found.documents
    val = int(most * spec.data.val_fraction)
    need = spec.data.seq_len + 1
    if min(most - val, val) < need:
        raise ConfigError(
            f"data.dataset {found.id} is too small for one sequence of data.seq_len={spec.data.seq_len}: its "
            f"{found.text_bytes:,} bytes of text make at most {most - val:,} train and {val:,} val tokens "
            f"at val_fraction={spec.data.val_fraction}, and each split needs {need}; lower data.seq_len "
            "or upload more text"
        )


def check_limits(spec: JobSpec, settings: Settings) -> None:
    """A ConfigError (422) stating the operator's limit that `spec` is over: its model's
    parameters (a reference family's, counted on the meta device), the tokens of one batch or of
    the whole run, the disk its kept checkpoints take, the GPUs and CPUs it asks for."""
    per_step = spec.batch.size * spec.data.seq_len
    per_eval = (spec.eval.batch_size or spec.batch.size) * spec.data.seq_len
    _at_most("batch.size × data.seq_len", per_step, settings.max_tokens_per_step, "tokens per batch")
    _at_most("eval.batch_size × data.seq_len", per_eval, settings.max_tokens_per_step, "tokens per batch")
    _at_most("steps × batch.size × data.seq_len", spec.steps * per_step, settings.max_job_tokens, "tokens")
    resources = spec.resources
    _at_most("resources.gpus", resources.gpus, settings.max_job_gpus, "GPUs")
    _at_most("resources.cpus × ranks", resources.total_cpus, settings.max_job_cpus, "CPUs")
    if spec.model.is_hf or spec.model.is_custom:  # an hf model is checked by building it, below
        return
    if settings.max_model_params is None and settings.max_checkpoint_bytes is None:
        return
    from symopt_core.models.size import parameter_count  # torch: only when a limit needs it

    vocab = spec.model.dims.get("vocab_size") or spec.data.vocab_size or 256
    dims = {k: v for k, v in spec.model.dims.items() if k != "vocab_size"}
    params = parameter_count(spec.model.family, spec.model.size, dims, vocab)
    _at_most("the model's parameters", params, settings.max_model_params, "parameters")
    kept = spec.checkpoint.keep + 1  # the newest is written before the oldest is deleted
    disk = params * CHECKPOINT_BYTES_PER_PARAM * kept
    _at_most(f"checkpoint.keep + 1 = {kept} checkpoints of {params:,} parameters", disk,
             settings.max_checkpoint_bytes, "bytes")  # fmt: skip


def _at_most(what: str, value: int, limit: int | None, unit: str) -> None:
    if limit is not None and value > limit:
        raise ConfigError(
            f"{what} asks for {value:,} {unit}; this service allows at most {limit:,} (an operator's "
            "limit): make the job smaller"
        )
