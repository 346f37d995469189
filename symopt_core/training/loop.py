"""`train(spec, report=...)`: one training loop for every family, preset and schedule.

Small functions around one loop: build (data, model, optimizer, schedule), step (gradient
accumulation, clipping, optimizer), evaluate (schedule-free presets at x, in eval mode), report
(metrics every `log_every` steps, evals, checkpoints), and resume bit-identically from a
checkpoint on CPU.

Metrics of a `metrics` event (step s, after s optimizer steps):
  train_loss, tokens, batch_size, seq_len        the step just taken
  lr_scale, lr, lr/<class>                       the schedule's multiplier, the preset's base lr times
                                                 it, and each class's absolute lr, as applied in step s
  grad_norm, grad_norm/<class>                   before clipping
  update_rms/<class>                             per-entry RMS of step s's parameter change
  tokens_per_s, step_time_s, optimizer_time_s,   over the steps since the previous metrics event, all
  optimizer_share                                measured per step (evals and checkpoints excluded)
  moe/<metric>, moe/layer<i>/<metric>            routing of all of step s's micro-batches together
                                                 (rank 0's share of the batch on 2+ ranks)
  shard/rank<r>/matrices, shard/rank<r>/flops_share,  on 2+ ranks: the whole-matrix directions
  shard/matrices_total                           each rank computed in step s (optim/sharding.py)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..assets import Assets
from ..data import BatchSampler, TokenDataset
from ..models.output import RoutingStats
from ..optim.schedule_free import ScheduleFree
from ..presets import PRESETS
from ..run_request import RunRequest
from ..schedules import BatchShape, batch_at, default_ramp_constant, lr_multiplier
from ..spec import JobSpec, load_spec
from ..spec_optimizer import build_spec_optimizer
from .events import Event, Report, Result, Status
from .job_data import build_job_data
from .job_model import build_job_model, model_label, optimizer_mapping
from .metrics import class_of_params, grad_norms, learning_rates, merge_routing, moe_metrics, update_rms
from .parallel import Parallelism, current_parallelism

__all__ = [
    "MetricsWindow",
    "Run",
    "StepOutcome",
    "build_run",
    "evaluate",
    "forward_backward",
    "train",
    "train_step",
]


@dataclass
class Run:
    """Everything a run holds between steps; `state()` is what a checkpoint stores."""

    spec: JobSpec
    device: torch.device
    dataset: TokenDataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: BatchSampler
    # How the ranks share the work (parallel.py), and the module the training forward goes
    # through (DDP's wrapper of `model`; evaluation, metrics and checkpoints use `model`).
    parallel: Parallelism
    train_module: nn.Module
    step: int = 0
    tokens: int = 0
    best_val_loss: float | None = None
    best_val_step: int | None = None
    evals: list[dict[str, float]] = field(default_factory=list)
    # Every metrics and eval event reported so far: a run resumed by a service that lost some of
    # them (they were in flight when it died) reports those again (`replay_after`, `_replay`).
    history: list[dict[str, Any]] = field(default_factory=list)

    def state(self, *, weights: bool = True) -> dict[str, Any]:
        """What a checkpoint stores; weights=False leaves out the model and optimizer (a sharded
        checkpoint writes those through DCP)."""
        state = {
            "spec": self.spec.model_dump(mode="json"),
            "step": self.step,
            "tokens": self.tokens,
            "best_val_loss": self.best_val_loss,
            "best_val_step": self.best_val_step,
            "evals": self.evals,
            "history": self.history,
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "data": self.dataset.meta(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
        }
        if weights:
            state |= {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        return state

    def load_state(self, checkpoint: Mapping[str, Any]) -> None:
        """Resume from `checkpoint`; without "model" and "optimizer" (a sharded checkpoint's run
        state) those must have been loaded already."""
        if "model" in checkpoint:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.sampler.load_state_dict(checkpoint["sampler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if self.device.type == "cuda" and checkpoint["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        self.step, self.tokens = int(checkpoint["step"]), int(checkpoint["tokens"])
        self.best_val_loss, self.best_val_step = checkpoint["best_val_loss"], checkpoint["best_val_step"]
        self.evals = list(checkpoint["evals"])
        self.history = list(checkpoint.get("history", []))


def resolve_device(device: str | torch.device | None, gpus: int) -> torch.device:
    """CUDA when the job asked for a GPU and one is visible, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


def build_run(
    spec: JobSpec,
    *,
    device: torch.device,
    data_root: str | Path | None = None,
    assets: Assets | None = None,
) -> Run:
    """Data, model, optimizer, lr schedule and sampler of `spec`, seeded by `spec.seed`; under
    torch.distributed with 2+ ranks, the model wrapped in DDP (or sharded by FSDP2, as
    resources.strategy says) and the matrix work split across the ranks.

    assets: where uploads, model directories and the token cache are (data_root alone: the
    `file:` corpora's root)."""
    assets = assets or Assets(data_root=Path(data_root) if data_root is not None else None)
    torch.manual_seed(spec.seed)
    parallel = current_parallelism(spec.resources.strategy)
    dataset = build_job_data(spec, assets)
    torch.manual_seed(spec.seed)  # the model's init does not depend on what the data took
    model = build_job_model(spec, dataset.vocab_size, assets).to(device)
    train_module = parallel.wrap(model, device)  # before the optimizer: FSDP shards `model` in place
    optimizer = build_spec_optimizer(
        model, spec.optimizer, mapping=optimizer_mapping(spec, model), shard=parallel.splits_optimizer_work
    )
    schedule = spec.schedule

    def multiplier(step: int) -> float:
        return lr_multiplier(
            step,
            kind=schedule.kind,
            total_steps=spec.steps,
            warmup_steps=schedule.warmup_steps,
            decay_frac=schedule.decay_frac,
            min_lr_ratio=schedule.min_lr_ratio,
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    sampler = BatchSampler(dataset, seed=spec.seed)
    return Run(spec, device, dataset, model, optimizer, scheduler, sampler, parallel, train_module)


def batch_shape(spec: JobSpec, tokens_seen: int) -> BatchShape:
    """This step's batch: the spec's, or the ramp's stage after `tokens_seen` tokens."""
    ramp = spec.batch.ramp
    if ramp is None:
        return BatchShape(spec.batch.size, spec.data.seq_len, 0)
    final = spec.batch.size * spec.data.seq_len
    c = ramp.c if ramp.c is not None else default_ramp_constant(final, spec.steps)
    return batch_at(
        tokens_seen,
        start_size=ramp.start_size,
        start_seq_len=ramp.start_seq_len or spec.data.seq_len,
        final_size=spec.batch.size,
        final_seq_len=spec.data.seq_len,
        c=c,
    )


def _autocast(run: Run) -> contextlib.AbstractContextManager[Any]:
    precision = run.spec.precision
    if precision == "bfloat16" or (precision == "auto" and run.device.type == "cuda"):
        return torch.autocast(run.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _micro_batches(size: int, micro: int | None) -> Iterator[slice]:
    step = min(micro or size, size)
    for start in range(0, size, step):
        yield slice(start, min(start + step, size))


def _accumulating(run: Run, *, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Gradients are communicated in the backward of a batch's last micro-batch only."""
    return contextlib.nullcontext() if last else run.parallel.no_sync(run.train_module)


def forward_backward(run: Run, shape: BatchShape) -> tuple[float, list[RoutingStats]]:
    """Gradients of one batch of `shape`, accumulated over micro-batches of batch.micro_size.

    The whole batch is drawn at once, so every rank of a data-parallel group draws the same one
    and keeps its rows (parallel.py). Each micro-batch's mean loss is weighted by its share of
    the rank's rows, so the gradient (averaged across ranks by DDP) is the whole batch's
    mean-loss gradient; returns that loss and the routing of this rank's micro-batches.
    """
    x_all, y_all = run.sampler.next("train", shape.size, shape.seq_len)
    rows = run.parallel.rows(shape.size, "the batch size")
    x_all, y_all = x_all[rows], y_all[rows]
    local = x_all.shape[0]
    total = torch.zeros((), device=run.device)
    routing: list[list[RoutingStats]] = []
    micro = list(_micro_batches(local, run.spec.batch.micro_size))
    for i, part in enumerate(micro):
        x, y = x_all[part], y_all[part]
        share = x.shape[0] / local
        with _accumulating(run, last=i == len(micro) - 1):
            with _autocast(run):
                output = run.train_module(
                    x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
                )
            assert output.loss is not None
            (output.loss * share).backward()
        total += output.loss.detach().float() * share
        routing.append(output.routing)
    return float(run.parallel.mean(total)), merge_routing(routing)


@dataclass
class StepOutcome:
    """What one optimizer step hands back to the loop."""

    loss: float  # the batch's mean training loss (non-finite: the optimizer did not run)
    metrics: dict[str, float]  # grad norms, lrs, update RMS, MoE load (only when asked to log)
    step_time_s: float  # forward, backward, clipping, optimizer and schedule of this step
    optimizer_time_s: float  # optimizer.step() alone


def _lr_metrics(run: Run) -> dict[str, float]:
    # LambdaLR sets every group's lr to base_lr · multiplier(last_epoch): this step's multiplier.
    scale = float(run.scheduler.lr_lambdas[0](run.scheduler.last_epoch))
    base = run.spec.optimizer.lr or PRESETS[run.spec.optimizer.preset].lr
    return {"lr_scale": scale, "lr": base * scale, **learning_rates(run.optimizer)}


def train_step(run: Run, shape: BatchShape, classes: dict[str, list[Tensor]], *, log: bool) -> StepOutcome:
    """One optimizer step: gradients over micro-batches, global-norm clipping to spec.grad_clip,
    the optimizer, then the lr schedule. A non-finite loss returns before the optimizer runs.

    classes: {class: params}, for the per-class metrics computed when `log` is set.
    """
    started = time.perf_counter()
    loss, routing = forward_backward(run, shape)
    if not math.isfinite(loss):
        return StepOutcome(loss, {}, time.perf_counter() - started, 0.0)
    metrics = grad_norms(classes) if log else {}
    if run.spec.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.spec.grad_clip)
    before: dict[str, list[Tensor]] = {}
    if log:
        before = {name: [p.detach().clone() for p in params] for name, params in classes.items()}
        metrics |= _lr_metrics(run)  # before the schedule moves on: the lrs this step applies
    _sync(run.device)
    optimizer_started = time.perf_counter()
    run.optimizer.step()
    _sync(run.device)
    optimizer_time = time.perf_counter() - optimizer_started
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1
    run.tokens += shape.tokens
    if log:
        metrics |= update_rms(classes, before) | moe_metrics(routing)
        metrics |= run.parallel.shard_metrics(run.optimizer, run.device)
    return StepOutcome(loss, metrics, time.perf_counter() - started, optimizer_time)


@dataclass
class MetricsWindow:
    """The steps since the last metrics event: every timing metric averages over the same steps."""

    steps: int = 0
    tokens: int = 0
    step_time_s: float = 0.0
    optimizer_time_s: float = 0.0

    def add(self, tokens: int, outcome: StepOutcome) -> None:
        self.steps += 1
        self.tokens += tokens
        self.step_time_s += outcome.step_time_s
        self.optimizer_time_s += outcome.optimizer_time_s

    def metrics(self) -> dict[str, float]:
        total = max(self.step_time_s, 1e-9)
        return {
            "tokens_per_s": self.tokens / total,
            "step_time_s": self.step_time_s / max(self.steps, 1),
            "optimizer_time_s": self.optimizer_time_s / max(self.steps, 1),
            "optimizer_share": self.optimizer_time_s / total,
        }


@torch.no_grad()
def evaluate(run: Run) -> float:
    """Mean validation cross-entropy over `eval.batches` batches, at x for schedule-free presets."""
    spec = run.spec
    schedule_free = isinstance(run.optimizer, ScheduleFree)
    run.model.eval()
    if schedule_free:
        run.optimizer.eval()  # type: ignore[attr-defined]
    try:
        losses = []
        size = spec.eval.batch_size or spec.batch.size
        rows = run.parallel.rows(size, "the eval batch size (eval.batch_size, else batch.size)")
        for _ in range(spec.eval.batches):
            x, y = run.sampler.next("val", size, spec.data.seq_len)
            with _autocast(run):
                output = run.model(x[rows].to(run.device), y[rows].to(run.device))
            assert output.ce_loss is not None
            losses.append(output.ce_loss.float())
        mean = torch.stack(losses).mean()
        return float(run.parallel.mean(mean))
    finally:
        run.model.train()
        if schedule_free:
            run.optimizer.train()  # type: ignore[attr-defined]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    spec: RunRequest | JobSpec | Mapping[str, Any] | str | Path,
    *,
    report: Report | None = None,
    run_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    device: str | torch.device | None = None,
    data_root: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    replay_after: Mapping[str, int] | int | None = None,
    assets: Assets | None = None,
) -> Result:
    """Train the model of `spec` and return its result; events go to `report` as they happen.

    spec: the job's spec, or a whole `RunRequest` (a worker's), which holds the spec and
        run_dir, resume_from, replay_after and assets: then none of those keywords.
    run_dir: where checkpoints go (`<run_dir>/checkpoints`); none are written without it.
    resume_from: a checkpoint file, or a directory whose newest checkpoint is used.
    should_stop: polled before each step; True stops the run as "cancelled" (with a checkpoint).
    replay_after: when resuming, the newest step a store holds of each series ({name: step}; a
        series it lacks has no point stored): the metrics and eval events the checkpoint
        recorded that add a point after it are reported again first (those a crashed service
        may not have stored). An int: every series is stored through that step.
    data_root, assets: where uploaded datasets and models, model directories, corpora and the
        token cache are (`assets`; data_root alone: the corpora).
    """
    request = _as_request(
        spec,
        run_dir=run_dir,
        resume_from=resume_from,
        data_root=data_root,
        replay_after=replay_after,
        assets=assets,
    )
    request = request.with_resume_point()
    job = request.spec if isinstance(request.spec, JobSpec) else load_spec(request.spec)
    run = build_run(job, device=resolve_device(device, job.resources.gpus), assets=request.assets)
    session = _Session(run, report or (lambda event: None), request.checkpoints)
    _start(session, request.resume_from, request.replay_after)
    _loop(session, should_stop)
    return _finish(session)


def _as_request(
    spec: RunRequest | JobSpec | Mapping[str, Any] | str | Path,
    *,
    run_dir: str | Path | None,
    resume_from: str | Path | None,
    data_root: str | Path | None,
    replay_after: Mapping[str, int] | int | None,
    assets: Assets | None,
) -> RunRequest:
    """train's arguments as one RunRequest: the one it was given, or the spec and keywords."""
    if isinstance(spec, RunRequest):
        where: dict[str, object] = {"run_dir": run_dir, "resume_from": resume_from, "data_root": data_root}
        where |= {"replay_after": replay_after, "assets": assets}
        if given := [name for name, value in where.items() if value is not None]:
            raise ValueError(
                f"train(RunRequest) takes {', '.join(given)} from the request; drop the keyword(s)"
            )
        return spec
    return RunRequest(
        spec,
        run_dir=Path(run_dir) if run_dir is not None else None,
        resume_from=Path(resume_from) if resume_from is not None else None,
        replay_after=replay_after,
        assets=assets or Assets(data_root=Path(data_root) if data_root is not None else None),
    )


@dataclass
class _Session:
    """What one call of `train` keeps from its start to its finish, beside the run itself."""

    run: Run
    report: Report
    checkpoints: Path | None  # where checkpoints go; None: none are written
    classes: dict[str, list[Tensor]] = field(default_factory=dict)  # {class: params}, for metrics
    started: float = 0.0  # perf_counter when the first step began
    tokens_at_start: int = 0
    status: str = "succeeded"
    diverged_at: int | None = None
    last_loss: float | None = None
    newest: Path | None = None  # the newest checkpoint written

    def emit(self, event: Event) -> None:
        if event.kind in ("metrics", "eval"):
            self.run.history.append({"kind": event.kind, "step": event.step, "data": event.data})
        self.report(event)

    def log(self, message: str) -> None:
        # Log lines are for people (the service's /logs, `symopt jobs logs`); never replayed.
        self.report(Event("log", self.run.step, {"message": message}))


def _start(session: _Session, resume_from: Path | None, replay_after: Mapping[str, int] | int | None) -> None:
    """Resume (replaying what a store may lack), report the start, and evaluate at step 0."""
    run, job = session.run, session.run.spec
    if resume_from is not None:
        run.load_state(run.parallel.load(resume_from, run.model, run.optimizer))
        if replay_after is not None:
            _replay(run.history, replay_after, session.report)
    params = sum(p.numel() for p in run.model.parameters())
    status = {"status": "resumed" if resume_from else "started", "device": str(run.device), "params": params}
    session.emit(Event("status", run.step, status))
    session.log(
        f"{model_label(job.model)}: {params:,} parameters on {run.device}; preset {job.optimizer.preset}; "
        f"{job.steps} steps of {job.batch.size} x {job.data.seq_len} tokens"
    )
    if resume_from is not None:
        session.log(f"resumed at step {run.step} from {resume_from}")
    session.log(run.dataset.summary())
    ranks = run.parallel.world_size
    if ranks != job.resources.ranks:  # a 2-rank spec trained by `symopt train`, or resumed on 1 rank
        session.log(
            f"the spec asks for {job.resources.ranks} rank(s); this run has {ranks} (same global batch)"
        )
    if run.step == 0 and not run.evals:  # a run resumed at step 0 has evaluated there already
        _evaluate_and_report(run, session.emit, session.log)
    session.classes = class_of_params(run.optimizer)
    session.started, session.tokens_at_start = time.perf_counter(), run.tokens


def _loop(session: _Session, should_stop: Callable[[], bool] | None) -> None:
    """Steps until spec.steps, a stop request or a non-finite loss, with their metrics, evals and
    checkpoints."""
    run, job = session.run, session.run.spec
    window = MetricsWindow()
    while run.step < job.steps:
        if _stop_requested(run, should_stop):
            session.status = "cancelled"
            session.log(f"stopped at step {run.step}: cancelled")
            return
        log_now = (run.step + 1) % job.log_every == 0 or run.step + 1 == job.steps
        shape = batch_shape(job, run.tokens)
        outcome = train_step(run, shape, session.classes, log=log_now)
        if not math.isfinite(outcome.loss):
            session.status, session.diverged_at = "diverged", run.step + 1
            diverged = {"status": "diverged", "train_loss": _json_float(outcome.loss)}
            session.emit(Event("status", run.step + 1, diverged))
            session.log(f"the loss became {outcome.loss} at step {run.step + 1}: stopped (diverged)")
            return
        window.add(shape.tokens, outcome)
        session.last_loss = outcome.loss
        if log_now:
            step_metrics = {"train_loss": outcome.loss, "tokens": run.tokens, "batch_size": shape.size,
                            "seq_len": shape.seq_len}  # fmt: skip
            session.emit(Event("metrics", run.step, outcome.metrics | step_metrics | window.metrics()))
            window = MetricsWindow()
        if run.step % job.eval.every == 0 or run.step == job.steps:
            _evaluate_and_report(run, session.emit, session.log)
        if session.checkpoints is not None and job.checkpoint.every and run.step % job.checkpoint.every == 0:
            session.newest = _checkpoint(run, session.checkpoints, session.emit)


def _finish(session: _Session) -> Result:
    """The last checkpoint (unless the run diverged or has just written it), then the result."""
    run = session.run
    if (
        session.checkpoints is not None
        and session.status != "diverged"
        and (session.newest is None or session.newest.stem != f"step_{run.step:09d}")
    ):
        session.newest = _checkpoint(run, session.checkpoints, session.emit)
    wall = time.perf_counter() - session.started
    result = Result(
        status=_status(session.status),
        steps=run.step,
        tokens=run.tokens,
        train_loss=session.last_loss,
        val_loss=run.evals[-1]["val_loss"] if run.evals else None,
        best_val_loss=run.best_val_loss,
        best_val_step=run.best_val_step,
        wall_time_s=wall,
        tokens_per_s=(run.tokens - session.tokens_at_start) / max(wall, 1e-9),
        diverged_at=session.diverged_at,
        checkpoint=str(session.newest) if session.newest is not None else None,
        evals=list(run.evals),
    )
    best = "-" if run.best_val_loss is None else f"{run.best_val_loss:.4f} at step {run.best_val_step}"
    session.log(
        f"{result.status} after {result.steps} steps, {result.tokens:,} tokens in {wall:.1f} s "
        f"({result.tokens_per_s:,.0f} tokens/s); best val_loss {best}"
    )
    session.emit(Event("result", run.step, result.to_dict()))
    return result


def _replay(history: list[dict[str, Any]], stored: Mapping[str, int] | int, report: Report) -> None:
    """Report again each recorded event that adds a point after its series' newest stored step.

    Per series, not one step for all: a store that holds step T's train_loss may have lost T's
    val_loss (reported after it, still in flight when the service died), and "nothing stored"
    (-1) must differ from "step 0 stored". The whole event goes again; a store that upserts
    (job, series, step) keeps each point once."""

    def newest(name: str) -> int:
        return stored if isinstance(stored, int) else stored.get(name, -1)

    for old in history:
        event = Event(old["kind"], old["step"], dict(old["data"]))
        if any(event.step > newest(name) for name in event.series):
            report(event)


def _stop_requested(run: Run, should_stop: Callable[[], bool] | None) -> bool:
    """should_stop(), agreed by every rank: a stop asked of any rank stops them all at one step."""
    asked = should_stop is not None and should_stop()
    return run.parallel.any(asked, run.device)


def _status(value: str) -> Status:
    assert value in ("succeeded", "diverged", "cancelled")
    return value  # type: ignore[return-value]


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _evaluate_and_report(run: Run, emit: Report, log: Callable[[str], None]) -> None:
    val_loss = evaluate(run)
    run.evals.append({"step": run.step, "tokens": run.tokens, "val_loss": val_loss})
    if math.isfinite(val_loss) and (run.best_val_loss is None or val_loss < run.best_val_loss):
        run.best_val_loss, run.best_val_step = val_loss, run.step
    emit(
        Event(
            "eval",
            run.step,
            {
                "val_loss": _json_float(val_loss),
                "tokens": run.tokens,
                "best_val_loss": run.best_val_loss,
                "best_val_step": run.best_val_step,
            },
        )
    )
    log(
        f"step {run.step}: val_loss {val_loss:.4f} (best {run.best_val_loss:.4f} at step {run.best_val_step})"
    )


def _checkpoint(run: Run, directory: Path, emit: Report) -> Path:
    """Every rank writes (or skips) its part of the checkpoint (parallel.py); the main one reports it."""
    path = run.parallel.save(directory, run, run.spec.checkpoint.keep)
    if run.parallel.is_main:
        emit(Event("checkpoint", run.step, {"path": str(path)}))
    return path
