"""One training step in detail: accumulation, clipping, precision, schedule-free evaluation, the
metrics it reports, and checkpoint files."""

from __future__ import annotations

import errno
import math
import subprocess
from pathlib import Path

import pytest
import torch
from torch import Tensor

from symopt_core.models.moe import MoE
from symopt_core.models.moe_metrics import load_metrics
from symopt_core.schedules import BatchShape
from symopt_core.spec import load_spec
from symopt_core.training import Event, latest_checkpoint, load_checkpoint, train
from symopt_core.training.checkpoint import save_checkpoint
from symopt_core.training.loop import (
    MetricsWindow,
    Run,
    StepOutcome,
    build_run,
    evaluate,
    forward_backward,
    train_step,
)
from symopt_core.training.metrics import class_of_params, merge_routing

from .test_training import tiny_spec

CPU = torch.device("cpu")


def make_run(data_dir: Path, family: str = "qwen3", preset: str = "symmetric", **changes: object) -> Run:
    return build_run(load_spec(tiny_spec(family, preset, **changes)), device=CPU, data_root=data_dir)


class FixedBatch:
    """Hands out consecutive slices of one batch, the way the loop asks a sampler for micro-batches."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y, self.position = x, y, 0

    def next(self, split: str, size: int, seq_len: int) -> tuple[Tensor, Tensor]:
        start, self.position = self.position, self.position + size
        return self.x[start : self.position, :seq_len], self.y[start : self.position, :seq_len]


@pytest.fixture(scope="module")
def batch(data_dir: Path) -> tuple[Tensor, Tensor]:
    run = make_run(data_dir)
    return run.sampler.next("train", 8, 32)


@pytest.mark.parametrize("micro", [4, 2])
def test_micro_batches_give_the_gradient_and_update_of_the_whole_batch(micro, batch, data_dir):
    results = {}
    for micro_size in (None, micro):
        run = make_run(data_dir, batch={"size": 8, "micro_size": micro_size})  # same seed: same init
        run.sampler = FixedBatch(*batch)  # type: ignore[assignment]
        loss, _ = forward_backward(run, BatchShape(8, 32, 0))
        grads = {name: p.grad.clone() for name, p in run.model.named_parameters()}
        run.optimizer.step()
        results[micro_size] = (
            loss,
            grads,
            {name: p.detach().clone() for name, p in run.model.named_parameters()},
        )
    (whole_loss, whole_grads, whole_params), (loss, grads, params) = results[None], results[micro]
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    for name, grad in whole_grads.items():  # fp32, summed in another order: ~1e-7 relative
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(params[name], whole_params[name], rtol=0, atol=1e-6, msg=name)


def test_gradients_are_clipped_to_the_global_norm_before_the_step(data_dir):
    # Plain SGD with lr 0.1 everywhere, no warmup: the update is -0.1 · g, so clipping shows in it.
    sgd = {
        "optimizer": {
            "preset": "symmetric",
            "overrides": {"all": {"rule": "sgd", "momentum": 0.0, "lr": 0.1}},
        },
        "schedule": {"kind": "constant", "warmup_steps": 0},
    }
    updates, stepped_grads = {}, {}
    for clip in (None, 0.05):
        run = make_run(data_dir, grad_clip=clip, **sgd)
        initial = {name: p.detach().clone() for name, p in run.model.named_parameters()}

        def record(
            optimizer: object, args: object, kwargs: object, run: Run = run, clip: float | None = clip
        ) -> None:
            stepped_grads[clip] = {name: p.grad.clone() for name, p in run.model.named_parameters()}

        run.optimizer.register_step_pre_hook(record)
        outcome = train_step(run, BatchShape(8, 32, 0), class_of_params(run.optimizer), log=True)
        updates[clip] = {name: p.detach() - initial[name] for name, p in run.model.named_parameters()}
    norm = outcome.metrics["grad_norm"]  # reported before clipping
    assert norm > 0.5  # well above the clip, so clipping must change the step
    clipped_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in stepped_grads[0.05].values()]))
    assert float(clipped_norm) == pytest.approx(0.05, rel=1e-5)
    for name, grad in stepped_grads[None].items():
        torch.testing.assert_close(stepped_grads[0.05][name], grad * 0.05 / norm, rtol=1e-5, atol=1e-12)
        # p - lr·g in fp32: exact up to the rounding of the weights (norm gains are 1, spaced 1.2e-7).
        torch.testing.assert_close(updates[0.05][name], -0.1 * stepped_grads[0.05][name], rtol=0, atol=1.2e-7)
    differences = [float((updates[0.05][n] - updates[None][n]).abs().max()) for n in updates[None]]
    assert max(differences) > 1e-3


def test_bfloat16_precision_autocasts_on_cpu(data_dir):
    dtypes = {}
    for precision in ("float32", "bfloat16"):
        run = make_run(data_dir, precision=precision)

        def record(module: object, args: object, out: Tensor, precision: str = precision) -> None:
            dtypes[precision] = out.dtype  # returns None: a forward hook's result would replace out

        hook = run.model.lm_head.register_forward_hook(record)
        outcome = train_step(run, BatchShape(8, 32, 0), class_of_params(run.optimizer), log=False)
        hook.remove()
        assert math.isfinite(outcome.loss)
        assert {p.dtype for p in run.model.parameters()} == {torch.float32}  # weights stay fp32
    assert dtypes == {"float32": torch.float32, "bfloat16": torch.bfloat16}
    spec = tiny_spec("qwen3", "symmetric", precision="bfloat16", steps=20, eval={"every": 20, "batches": 4})
    result = train(spec, data_root=data_dir)
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"] - 0.5


def test_schedule_free_evaluates_at_x_in_eval_mode_and_trains_on_at_y(data_dir):
    run = make_run(data_dir, preset="sf-symmetric")
    classes = class_of_params(run.optimizer)
    for _ in range(8):
        train_step(run, BatchShape(8, 32, 0), classes, log=False)
    params = dict(run.model.named_parameters())
    y = {name: p.detach().clone() for name, p in params.items()}
    beta = 0.9  # y = (1 - β) z + β x, so x = (y - (1 - β) z) / β
    x = {name: (y[name] - (1 - beta) * run.optimizer.state[p]["z"]) / beta for name, p in params.items()}
    assert max(float((x[n] - y[n]).abs().max()) for n in x) > 1e-4  # x and y really differ here
    seen: list[tuple[bool, bool, dict[str, Tensor]]] = []

    def record(module: torch.nn.Module, args: object) -> None:
        current = {name: p.detach().clone() for name, p in params.items()}
        seen.append((module.training, run.optimizer.train_mode, current))  # type: ignore[attr-defined]

    hook = run.model.register_forward_pre_hook(record)
    evaluate(run)
    hook.remove()
    assert seen
    for training, train_mode, current in seen:
        assert (training, train_mode) == (False, False)
        for name in x:
            torch.testing.assert_close(current[name], x[name], rtol=0, atol=1e-6, msg=name)
    assert run.model.training
    assert run.optimizer.train_mode  # type: ignore[attr-defined]
    for name, p in params.items():
        torch.testing.assert_close(p.detach(), y[name], rtol=0, atol=1e-6, msg=name)


def test_lr_metrics_are_the_lrs_each_step_applied(data_dir):
    events: list[Event] = []
    spec = tiny_spec("olmoe", "symmetric", steps=8, log_every=1, eval={"every": 8, "batches": 1})
    train(spec, report=events.append, data_root=data_dir)
    metrics = [e.data for e in events if e.kind == "metrics"]
    scales = [min(1.0, s / 6) for s in range(1, 9)]  # warmup 5: step s applied (s - 1 + 1) / 6
    assert [m["lr_scale"] for m in metrics] == pytest.approx(scales)
    for m, scale in zip(metrics, scales, strict=True):
        assert m["lr"] == pytest.approx(0.02 * scale)  # the preset's base lr
        assert m["lr/attn_qkv"] == pytest.approx(0.02 * scale)
        assert m["lr/vector"] == pytest.approx(1e-3 * scale)  # AdamW share 0.05
        assert m["lr/router"] == pytest.approx(7.5e-4 * scale)
    classes = ("embedding", "lm_head", "attn_qkv", "attn_out", "router", "expert_in", "expert_out", "vector")
    assert {k for k in metrics[0] if k.startswith("lr/")} == {f"lr/{c}" for c in classes}


def test_schedule_free_presets_keep_the_lr_flat_after_warmup(data_dir):
    events: list[Event] = []
    spec = tiny_spec("gpt2", "sf-normuon", steps=12, log_every=1, eval={"every": 12, "batches": 1})
    train(spec, report=events.append, data_root=data_dir)
    assert [e.data["lr_scale"] for e in events if e.kind == "metrics"][5:] == [1.0] * 7


def test_timing_metrics_average_over_the_same_window():
    window = MetricsWindow()
    for step_time, optimizer_time in ((1.0, 0.5), (2.0, 0.5), (3.0, 2.0)):
        window.add(
            100, StepOutcome(loss=1.0, metrics={}, step_time_s=step_time, optimizer_time_s=optimizer_time)
        )
    assert window.metrics() == pytest.approx(
        {"tokens_per_s": 300 / 6.0, "step_time_s": 2.0, "optimizer_time_s": 1.0, "optimizer_share": 0.5}
    )


def test_routing_of_micro_batches_merges_into_the_whole_batch():
    torch.manual_seed(0)
    moe = MoE(16, n_experts=4, top_k=2, d_ff=8)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(6, 5, 16)
    with torch.no_grad():
        whole = moe(x).stats
        merged = merge_routing([[moe(x[:2]).stats], [moe(x[2:3]).stats], [moe(x[3:]).stats]])[0]
    assert merged.tokens == whole.tokens == 30
    assert torch.equal(merged.counts, whole.counts)
    torch.testing.assert_close(merged.mean_probs, whole.mean_probs, rtol=1e-6, atol=1e-7)
    assert merged.logsumexp_mean == pytest.approx(whole.logsumexp_mean, rel=1e-6)
    assert merged.z_loss == pytest.approx(whole.z_loss, rel=1e-6)
    assert load_metrics(merged) == pytest.approx(load_metrics(whole), rel=1e-5)
    assert merge_routing([[], []]) == []  # dense models


def test_the_loop_reports_the_routing_of_every_micro_batch(data_dir):
    run = make_run(data_dir, family="olmoe", batch={"size": 8, "micro_size": 2})
    _, routing = forward_backward(run, BatchShape(8, 32, 0))
    assert len(routing) == run.model.config.n_layers
    for stats in routing:
        assert stats.tokens == 8 * 32
        assert int(stats.counts.sum()) == 8 * 32 * stats.top_k


def test_latest_checkpoint_ignores_temp_files_of_interrupted_writes(tmp_path):
    save_checkpoint(tmp_path, 5, {"step": 5}, keep=3)
    (tmp_path / ".step_000000099.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".step_x1y2z3.tmp").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000000005.pt"
    assert load_checkpoint(tmp_path)["step"] == 5
    save_checkpoint(tmp_path, 6, {"step": 6}, keep=1)  # pruning counts complete checkpoints only
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".step_000000099.tmp",
        ".step_x1y2z3.tmp",
        "step_000000006.pt",
    ]


def test_a_failed_write_leaves_no_checkpoint_and_no_temp_file(tmp_path):
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever pickling raises
        save_checkpoint(tmp_path, 7, {"step": 7, "unpicklable": lambda: None}, keep=3)
    assert list(tmp_path.iterdir()) == []
    assert latest_checkpoint(tmp_path) is None


def test_a_full_disk_says_so_and_names_the_checkpoint(tmp_path):
    # torch.save turns the stream's ENOSPC into "RuntimeError: unexpected pos ...": the errno and
    # the file must reach whoever reads the job's error. A real full disk: a 64 KiB tmpfs (root only).
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"needs root to mount a tmpfs as a full disk: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError, match="No space left on device") as raised:
            save_checkpoint(disk, 3, {"weights": torch.zeros(100_000)}, keep=3)
        assert raised.value.errno == errno.ENOSPC
        assert raised.value.filename == str(disk / "step_000000003.pt")
        assert list(disk.iterdir()) == []  # the temp file is gone too
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
