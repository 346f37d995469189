"""Data-parallel jobs through Ray Train, as in production: 2 gloo ranks on CPU against 1 process.

Runs are named `[family:]preset[@fsdp]`: the qwen3 tiny model unless a family is named, the
ranks holding replicas (DDP) unless "@fsdp" shards the model (FSDP2, sharded DCP checkpoints).

Each run goes through `worker.distributed.run_distributed`, the Ray task the scheduler starts for
a job of 2+ ranks (its TorchTrainer starts the ranks and torch.distributed). The same spec on one
process, with the same global batch, is the reference: the final parameters must agree to fp32
tolerance, each rank must have computed only its share of the whole-matrix directions, and a
2-rank checkpoint must resume on 1 rank and continue the same trajectory.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from service.scheduler.runtime import RayRuntime
from symopt_core import build_model
from symopt_core.assets import Assets
from symopt_core.optim.layout import parse_layout
from symopt_core.optim.rules import get_rule
from symopt_core.optim.sharding import assign_by_cost
from symopt_core.presets import param_groups
from symopt_core.training import RunRequest, train
from worker.distributed import run_distributed

STEPS = 6

# One worker runs the module: its 2-rank runs (20-30 s each) are made once and shared by the
# tests that read them, instead of once per xdist worker.
pytestmark = pytest.mark.xdist_group("ray-train")


def spec(preset: str, workers: int) -> dict[str, Any]:
    """`preset`, or `family:preset` for another family's tiny model (default qwen3), with
    "@fsdp" for resources.strategy = fsdp."""
    preset, _, strategy = preset.partition("@")
    family, _, preset = preset.rpartition(":")
    return {
        "model": {"family": family or "qwen3", "size": "tiny"},
        "data": {"corpus": "pystdlib", "seq_len": 32},
        "batch": {"size": 4},
        "steps": STEPS,
        "log_every": 1,
        "eval": {"every": 3, "batches": 2},
        "schedule": {"kind": "constant"},
        "optimizer": {"preset": preset},
        "checkpoint": {"every": 3, "keep": 5},
        "resources": {"workers": workers, "strategy": strategy or "ddp"},
        "precision": "float32",
        "seed": 4,
    }


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayRuntime]:
    runtime = RayRuntime(num_cpus=2)
    runtime.start()
    yield runtime
    runtime.shutdown()


class Runs:
    """Each preset's 2-rank run through Ray Train and its 1-process reference, run once."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root, self.data_dir = root, data_dir
        self.events: dict[str, list[dict[str, Any]]] = {}

    def parallel(self, preset: str) -> list[dict[str, Any]]:
        if preset not in self.events:
            import ray

            task = ray.remote(max_calls=1, num_cpus=0)(run_distributed)
            request = RunRequest(
                spec(preset, 2), run_dir=self.root / f"{preset}-2", assets=Assets(data_root=self.data_dir)
            )
            stream = task.remote(request)
            self.events[preset] = [ray.get(ref) for ref in stream]
        return self.events[preset]

    def single(self, preset: str) -> Path:
        """The 1-process reference (one run for both strategies: one rank trains the plain model)."""
        preset = preset.partition("@")[0]
        run_dir = self.root / f"{preset}-1"
        if not run_dir.exists():
            train(spec(preset, 1), run_dir=run_dir, data_root=self.data_dir)
        return run_dir

    def model(self, preset: str, ranks: int, step: int = STEPS) -> dict[str, torch.Tensor]:
        reference = dict(
            torch.load(self.single(preset) / "checkpoints" / f"step_{step:09d}.pt", weights_only=True)[
                "model"
            ]
        )
        if ranks == 1:
            return reference
        self.parallel(preset)
        checkpoints = self.root / f"{preset}-{ranks}" / "checkpoints"
        if not preset.endswith("@fsdp"):
            return dict(torch.load(checkpoints / f"step_{step:09d}.pt", weights_only=True)["model"])
        # A sharded checkpoint, read whole in this process (DCP reshards to the plain tensors).
        model = {name: torch.empty_like(value) for name, value in reference.items()}
        dcp.load({"model": model}, checkpoint_id=str(checkpoints / f"step_{step:09d}.dcp"), no_dist=True)
        return model


@pytest.fixture(scope="module")
def runs(ray_cluster: RayRuntime, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Runs:
    return Runs(tmp_path_factory.mktemp("data-parallel"), data_dir)


def assert_same_parameters(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """fp32 agreement. atol 1e-4 against the ~6e-3 an entry moves in 6 AdamW steps of lr 1e-3:
    AdamW's m/√v turns the reduction-order noise of a near-zero gradient entry (two half-batch
    means averaged, against one whole-batch mean) into a visible step (seen: 2.3e-5 on one of
    14,016 embedding entries)."""
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        try:
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-4)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


def gathered_matrices(preset: str) -> int:
    """The logical matrices of the model whose rule is whole-matrix ("gather"): what the ranks
    split between them each step, counted straight from the param groups."""
    model = build_model("qwen3", "tiny", vocab_size=256, max_seq_len=32)
    total = 0
    for group in param_groups(model, preset):
        rule = get_rule(group["rule"])
        if rule.communication != "gather":
            continue
        layout = parse_layout(group["layout"])
        total += sum(layout.to_matrices(p.detach(), rule.view).shape[0] for p in group["params"])
    return total


def test_lpt_assignment_is_balanced_and_the_same_on_every_rank() -> None:
    costs = [8.0, 1.0, 1.0, 4.0, 4.0, 2.0, 1.0, 3.0]
    owners = assign_by_cost(costs, 2)
    assert owners == assign_by_cost(list(costs), 2)  # a pure function of the costs
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in range(2)]
    assert sorted(loads) == [12.0, 12.0]
    assert assign_by_cost(costs, 1) == [0] * len(costs)
    with pytest.raises(ValueError, match="world_size"):
        assign_by_cost(costs, 0)


@pytest.mark.slow
# olmoe: an expert no token reached on a rank takes no part in its backward (DDP must expect it).
@pytest.mark.parametrize(
    "preset", ["adamw", "muon", "symmetric", "olmoe:symmetric", "muon@fsdp", "symmetric@fsdp"]
)
def test_two_ranks_equal_one_process_with_the_same_global_batch(runs: Runs, preset: str) -> None:
    events = runs.parallel(preset)
    assert [e for e in events if e["kind"] == "error"] == []
    result = next(e for e in events if e["kind"] == "result")["data"]
    assert result["status"] == "succeeded"
    assert result["steps"] == STEPS
    assert_same_parameters(runs.model(preset, 2), runs.model(preset, 1))
    reference = torch.load(runs.single(preset) / "checkpoints" / f"step_{STEPS:09d}.pt", weights_only=True)
    if preset.endswith("@fsdp"):  # every rank wrote its rows of each checkpoint, rank 0 reported it
        checkpoints = [e["data"]["path"] for e in events if e["kind"] == "checkpoint"]
        assert [Path(path).name for path in checkpoints] == ["step_000000003.dcp", "step_000000006.dcp"]
    losses = [e["data"]["train_loss"] for e in events if e["kind"] == "metrics"]
    expected = [event["data"]["train_loss"] for event in reference["history"] if event["kind"] == "metrics"]
    assert losses == pytest.approx(expected, rel=1e-5)  # the loss of the whole batch, not rank 0's half


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["adamw", "muon", "symmetric", "symmetric@fsdp"])
def test_each_rank_orthogonalizes_only_its_share(runs: Runs, preset: str) -> None:
    metrics = [e["data"] for e in runs.parallel(preset) if e["kind"] == "metrics"]
    total = gathered_matrices(preset.partition("@")[0])
    if total == 0:  # adamw: nothing to split, so nothing is communicated for the optimizer
        assert not any(name.startswith("shard/") for name in metrics[-1])
        return
    for step in metrics:
        assert step["shard/matrices_total"] == total
        counts = [step["shard/rank0/matrices"], step["shard/rank1/matrices"]]
        assert sum(counts) == total
        assert min(counts) > 0
        shares = [step["shard/rank0/flops_share"], step["shard/rank1/flops_share"]]
        assert math.isclose(sum(shares), 1.0)
        assert max(shares) < 0.6  # balanced by FLOPs


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_on_one_rank_on_the_same_trajectory(runs: Runs, data_dir: Path) -> None:
    runs.parallel("symmetric")
    halfway = runs.root / "symmetric-2" / "checkpoints" / f"step_{STEPS // 2:09d}.pt"
    resumed = runs.root / "symmetric-resumed-on-1"
    result = train(spec("symmetric", 1), run_dir=resumed, resume_from=halfway, data_root=data_dir)
    assert result.steps == STEPS
    final = dict(torch.load(resumed / "checkpoints" / f"step_{STEPS:09d}.pt", weights_only=True)["model"])
    assert_same_parameters(final, runs.model("symmetric", 2))
    assert_same_parameters(final, runs.model("symmetric", 1))


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_on_two_ranks_as_a_retried_attempt_does(runs: Runs) -> None:
    """A retried FSDP attempt: the run directory holds the step-3 DCP checkpoint, and the ranks
    Ray Train starts find it, load their rows and finish on the same trajectory."""
    import ray

    preset = "symmetric@fsdp"
    runs.parallel(preset)
    retried = runs.root / "symmetric-fsdp-retried"
    halfway = f"step_{STEPS // 2:09d}.dcp"
    shutil.copytree(runs.root / f"{preset}-2" / "checkpoints" / halfway, retried / "checkpoints" / halfway)
    task = ray.remote(max_calls=1, num_cpus=0)(run_distributed)
    request = RunRequest(
        spec(preset, 2), run_dir=retried, resume_newest=True, assets=Assets(data_root=runs.data_dir)
    )
    events = [ray.get(ref) for ref in task.remote(request)]
    assert [e for e in events if e["kind"] == "error"] == []
    assert events[0]["data"]["resume_from"].endswith(halfway)
    assert [e["step"] for e in events if e["kind"] == "metrics"] == list(range(STEPS // 2 + 1, STEPS + 1))
    model = {name: torch.empty_like(value) for name, value in runs.model(preset, 1).items()}
    final = retried / "checkpoints" / f"step_{STEPS:09d}.dcp"
    dcp.load({"model": model}, checkpoint_id=str(final), no_dist=True)
    assert_same_parameters(model, runs.model(preset, 1))


@pytest.mark.slow
def test_a_sharded_two_rank_checkpoint_resumes_on_one_rank_on_the_same_trajectory(
    runs: Runs, data_dir: Path
) -> None:
    """FSDP: DCP reshards the two ranks' rows of every parameter and optimizer state (the
    schedule-free wrapper's z included) into one process's whole tensors."""
    preset = "sf-normuon@fsdp"
    runs.parallel(preset)
    halfway = runs.root / f"{preset}-2" / "checkpoints" / f"step_{STEPS // 2:09d}.dcp"
    assert sorted(path.name for path in halfway.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "run.pt",
    ]
    resumed = runs.root / "sf-normuon-fsdp-resumed-on-1"
    events: list[Any] = []
    result = train(
        spec("sf-normuon", 1), run_dir=resumed, resume_from=halfway, data_root=data_dir, report=events.append
    )
    assert result.steps == STEPS
    assert any("resumed at step 3" in e.data.get("message", "") for e in events if e.kind == "log")
    final = dict(torch.load(resumed / "checkpoints" / f"step_{STEPS:09d}.pt", weights_only=True)["model"])
    assert_same_parameters(final, runs.model(preset, 2))
    assert_same_parameters(final, runs.model(preset, 1))


def test_a_batch_that_does_not_split_across_the_ranks_is_refused() -> None:
    from pydantic import ValidationError

    from symopt_core.spec import JobSpec

    bad = {**spec("symmetric", 3)}
    with pytest.raises(ValidationError, match=r"batch.size \(4\) must be a multiple of the 3"):
        JobSpec.model_validate(bad)
    with pytest.raises(ValidationError, match="one GPU per rank"):
        JobSpec.model_validate({**spec("symmetric", 2), "resources": {"workers": 2, "gpus": 4}})
    spanning = {"gpus": 8, "nodes": 2, "gpus_per_node": 8}
    with pytest.raises(ValidationError, match="nodes × gpus_per_node = 16"):
        JobSpec.model_validate({**spec("symmetric", 2), "resources": spanning})
    ok = JobSpec.model_validate({**spec("symmetric", 2), "resources": {"gpus": 4, "cpus": 2}})
    assert ok.resources.ranks == 4
    assert ok.resources.total_cpus == 8
