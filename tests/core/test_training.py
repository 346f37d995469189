"""The training loop: every family learns, MoE reports its load, runs resume bit-identically."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from symopt_core.spec import load_spec
from symopt_core.training import Event, latest_checkpoint, load_checkpoint, train

FAMILIES = ["gpt2", "qwen3", "gemma3", "olmoe", "gpt-oss"]


def tiny_spec(family: str, preset: str, **changes: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "model": {"family": family, "size": "tiny"},
        "data": {"corpus": "shakespeare", "seq_len": 32},
        "optimizer": {"preset": preset},
        "schedule": {"kind": "schedule_free" if preset.startswith("sf-") else "constant", "warmup_steps": 5},
        "batch": {"size": 8},
        "steps": 40,
        "eval": {"every": 20, "batches": 4},
        "log_every": 10,
        "seed": 3,
    }
    spec.update(changes)
    return spec


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", ["adamw", "symmetric"])
def test_each_family_learns_with_adamw_and_symmetric(family, preset, data_dir):
    events: list[Event] = []
    result = train(tiny_spec(family, preset), report=events.append, data_root=data_dir)
    assert result.status == "succeeded"
    first, last = result.evals[0]["val_loss"], result.evals[-1]["val_loss"]
    assert last < first - 0.5, (first, last)  # from ln(65) ≈ 4.17 towards character statistics
    metrics = [e for e in events if e.kind == "metrics"]
    assert [e.step for e in metrics] == [10, 20, 30, 40]
    data = metrics[-1].data
    for key in (
        "train_loss",
        "tokens_per_s",
        "step_time_s",
        "optimizer_time_s",
        "grad_norm",
        "lr_scale",
        "lr",
    ):
        assert math.isfinite(data[key]), key
    assert 0.0 < data["optimizer_share"] <= 1.0
    assert any(k.startswith("lr/") for k in data)
    assert any(k.startswith("update_rms/") for k in data)
    assert any(k.startswith("grad_norm/attn") for k in data)
    if family in ("olmoe", "gpt-oss"):
        for key in (
            "moe/max_mean_load",
            "moe/load_cv",
            "moe/dead_expert_fraction",
            "moe/layer0/max_mean_load",
        ):
            assert key in data, key
        assert data["moe/max_mean_load"] >= 1.0
    else:
        assert not any(k.startswith("moe/") for k in data)


@pytest.mark.parametrize("preset", ["symmetric", "sf-symmetric", "normuon"])
def test_resume_continues_bit_identically(preset, tmp_path, data_dir):
    spec = tiny_spec(
        "olmoe",
        preset,
        steps=20,
        checkpoint={"every": 10, "keep": 5},
        model={"family": "olmoe", "size": "tiny", "dropout": 0.1},
    )
    straight = train(spec, run_dir=tmp_path / "straight", data_root=data_dir)
    # N steps, interrupted (as a preempted worker), then resumed for the other N.
    polls = iter(range(1000))
    first_half = train(
        spec, run_dir=tmp_path / "half", data_root=data_dir, should_stop=lambda: next(polls) >= 10
    )
    assert first_half.status == "cancelled"
    assert first_half.checkpoint is not None
    resumed = train(spec, run_dir=tmp_path / "half", resume_from=first_half.checkpoint, data_root=data_dir)
    assert resumed.steps == straight.steps == 20
    a = load_checkpoint(Path(straight.checkpoint))
    b = load_checkpoint(Path(resumed.checkpoint))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert resumed.val_loss == straight.val_loss
    assert resumed.evals == straight.evals


def test_a_run_stopped_before_its_first_step_resumes_bit_identically(tmp_path, data_dir):
    """Stopped at step 0 (a cancel right after the start): the checkpoint already holds the
    step-0 evaluation, which the resumed run must not repeat (it would move the sampler)."""
    spec = tiny_spec("qwen3", "sf-normuon", steps=6)
    straight = train(spec, run_dir=tmp_path / "straight", data_root=data_dir)
    stopped = train(spec, run_dir=tmp_path / "stopped", data_root=data_dir, should_stop=lambda: True)
    assert (stopped.status, stopped.steps) == ("cancelled", 0)
    resumed = train(spec, run_dir=tmp_path / "stopped", resume_from=stopped.checkpoint, data_root=data_dir)
    assert resumed.evals == straight.evals
    assert resumed.val_loss == straight.val_loss


def test_checkpoints_keep_the_newest_and_hold_the_whole_state(tmp_path, data_dir):
    result = train(
        tiny_spec("qwen3", "symmetric", steps=30, checkpoint={"every": 5, "keep": 2}),
        run_dir=tmp_path,
        data_root=data_dir,
    )
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000000025.pt", "step_000000030.pt"]
    assert latest_checkpoint(tmp_path / "checkpoints") == Path(result.checkpoint)
    state = load_checkpoint(tmp_path / "checkpoints")
    assert {"model", "optimizer", "scheduler", "sampler", "rng", "spec", "step", "tokens", "data"} <= set(
        state
    )
    assert state["step"] == 30
    assert state["tokens"] == 30 * 8 * 32
    assert state["data"]["vocab_size"] == 65


def test_divergence_stops_the_run_with_its_step(data_dir):
    spec = tiny_spec("gpt2", "adamw", optimizer={"preset": "adamw", "lr": 1e6}, grad_clip=None, steps=30)
    events = []
    result = train(spec, data_root=data_dir, report=events.append)
    assert result.status == "diverged"
    assert result.diverged_at is not None
    assert 1 <= result.diverged_at <= 30
    logs = [e.data["message"] for e in events if e.kind == "log"]
    assert f"at step {result.diverged_at}: stopped (diverged)" in logs[-2]
    assert logs[-1].startswith(f"diverged after {result.diverged_at - 1} steps")


def test_a_run_logs_what_it_trains_each_evaluation_and_how_it_ended(data_dir):
    events = []
    result = train(tiny_spec("qwen3", "symmetric"), data_root=data_dir, report=events.append)
    logs = [(e.step, e.data["message"]) for e in events if e.kind == "log"]
    assert logs[0][1].startswith("qwen3 tiny: ")
    assert "preset symmetric; 40 steps of 8 x 32 tokens" in logs[0][1]
    assert [step for step, message in logs if message.startswith(f"step {step}: val_loss")] == [0, 20, 40]
    assert logs[-1][1].startswith("succeeded after 40 steps, 10,240 tokens in ")
    assert f"best val_loss {result.best_val_loss:.4f} at step {result.best_val_step}" in logs[-1][1]


def test_should_stop_cancels_and_leaves_a_resumable_checkpoint(tmp_path, data_dir):
    polls = iter(range(1000))
    result = train(
        tiny_spec("gpt2", "muon"), run_dir=tmp_path, should_stop=lambda: next(polls) >= 7, data_root=data_dir
    )
    assert result.status == "cancelled"
    assert result.steps == 7
    assert Path(result.checkpoint).name == "step_000000007.pt"


def test_batch_ramp_grows_sequence_then_batch(data_dir):
    events: list[Event] = []
    spec = tiny_spec(
        "gpt2",
        "symmetric",
        batch={"size": 8, "ramp": {"start_size": 2, "start_seq_len": 8, "c": 2.0}},
        steps=60,
        log_every=1,
    )
    result = train(spec, report=events.append, data_root=data_dir)
    shapes = [(e.data["batch_size"], e.data["seq_len"]) for e in events if e.kind == "metrics"]
    assert shapes[0] == (2, 8)
    assert shapes[-1] == (8, 32)
    tokens = [b * s for b, s in shapes]
    assert tokens == sorted(tokens)  # tokens per step only grow
    seq_first = [s for b, s in shapes if b == 2]
    assert max(seq_first) == 32  # the sequence reaches full length before the batch grows
    assert result.tokens == sum(tokens)


def test_gradient_accumulation_and_cosine_schedule(data_dir):
    events: list[Event] = []
    spec = tiny_spec(
        "qwen3",
        "adamw",
        batch={"size": 8, "micro_size": 2},
        schedule={"kind": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.1},
    )
    result = train(spec, report=events.append, data_root=data_dir)
    assert result.tokens == 40 * 8 * 32
    metrics = [e.data for e in events if e.kind == "metrics"]
    # Step 40 reports the lr it applied, the multiplier of step index 39: 1/30 short of the end.
    last = 0.1 + 0.45 * (1 + math.cos(math.pi * 29 / 30))
    assert metrics[-1]["lr_scale"] == pytest.approx(last)
    assert metrics[-1]["lr"] == pytest.approx(1e-3 * last)  # adamw's base lr
    assert metrics[-1]["lr/vector"] == pytest.approx(1e-3 * last)


def test_spec_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown dim\\(s\\) 'layers' for model family 'qwen3'"):
        load_spec(tiny_spec("qwen3", "adamw", model={"family": "qwen3", "layers": 2}))
    with pytest.raises(ValueError, match=r"batch.size \(8\) must be a multiple of batch.micro_size \(3\)"):
        load_spec(tiny_spec("qwen3", "adamw", batch={"size": 8, "micro_size": 3}))
    with pytest.raises(ValueError, match=r"unknown preset 'lion'"):
        load_spec(tiny_spec("qwen3", "lion"))
    with pytest.raises(ValueError, match="needs a schedule-free preset"):
        load_spec(tiny_spec("qwen3", "adamw", schedule={"kind": "schedule_free"}))


def test_resume_replays_the_events_after_a_given_step(tmp_path, data_dir):
    # What a service that died with reports in flight needs: the checkpoint remembers them.
    spec = tiny_spec("gpt2", "adamw", steps=30, checkpoint={"every": 20, "keep": 1}, log_every=5)
    polls = iter(range(1000))
    first = train(spec, run_dir=tmp_path, data_root=data_dir, should_stop=lambda: next(polls) >= 20)
    assert first.steps == 20
    events: list[Event] = []
    train(
        spec,
        run_dir=tmp_path,
        resume_from=first.checkpoint,
        data_root=data_dir,
        replay_after=7,
        report=events.append,
    )
    replayed = [
        (e.kind, e.step) for e in events[: events.index(next(e for e in events if e.kind == "status"))]
    ]
    assert replayed == [("metrics", 10), ("metrics", 15), ("metrics", 20), ("eval", 20)]
    later = [e.step for e in events if e.kind == "metrics"][3:]
    assert later == [25, 30]
