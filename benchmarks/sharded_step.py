"""The data-parallel optimizer step, split k ways: measured on one device, projected to k ranks.

    python -m benchmarks.sharded_step --shape qwen3-0.6b --device cuda    # the issue's table
    python -m benchmarks.sharded_step --shape nanogpt-cpu                 # this machine
    python -m benchmarks.sharded_step --quick                             # a smoke run (CI)

Under DDP each of k ranks computes the whole-matrix directions (polar, spectral, hybrid,
NorMuon) of its FLOP-balanced share of the matrices and all-gathers the rest
(symopt_core/optim/sharding.py). One device stands in for one rank: for each k it times the
directions of the most loaded rank's share (the step's critical path), batched by shape as the
sharded step computes them, and the rest of the step, which every rank repeats (momentum,
element-wise rules, row-local rules, applying the updates), as the whole step minus all the
directions. Projected step on k ranks = rest + heaviest share + all-gather, the all-gather being
the bytes each rank receives over `--allgather-gbs` (an assumed bus bandwidth, not a
measurement: about 300 GB/s for NCCL all-gather over H100 NVLink within one node).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from symopt_core import build_model, build_optimizer
from symopt_core.optim import SymOpt
from symopt_core.optim.engines import RecordingEngine
from symopt_core.optim.layout import parse_layout
from symopt_core.optim.rules import get_rule
from symopt_core.optim.sharding import Bucket, assign_by_cost, polar_flops, shares
from symopt_core.presets import param_groups

from .optimizer_step import SHAPES, build

DEFAULT_PRESETS = ["muon", "normuon", "symmetric", "symmetric-hybrid"]


def timed(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds of `call` (CUDA events on GPU)."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            call()
            samples.append((time.perf_counter() - began) * 1e3)
    return statistics.median(samples)


def share_of(buckets: list[Bucket], world: int, rank: int) -> list[tuple[Bucket, torch.Tensor]]:
    """The matrices `rank` computes among `world` ranks: per bucket, the indices it owns."""
    device = buckets[0].matrices.device
    return [(buckets[b], torch.tensor(i, device=device)) for b, i in shares(buckets, world)[rank].items()]


def flops(bucket: Bucket) -> float:
    """Of one matrix of `bucket`."""
    m, n = bucket.matrices.shape[-2:]
    return polar_flops(int(m), int(n), bucket.steps)


def heaviest_rank(buckets: list[Bucket], world: int) -> int:
    loads = [sum(flops(b) * len(index) for b, index in share_of(buckets, world, r)) for r in range(world)]
    return max(range(world), key=lambda r: loads[r])


def gathered_bytes(buckets: list[Bucket]) -> int:
    """Bytes of every whole-matrix direction of one step: what the ranks all-gather together."""
    return sum(b.matrices.numel() * b.matrices.element_size() for b in buckets)


def measure(
    preset: str, shape: str, device: torch.device, ks: list[int], warmup: int, repeats: int, gbs: float
) -> dict[str, Any]:
    model = build(shape, device)
    optimizer = build_optimizer(model, preset)
    base = getattr(optimizer, "base", optimizer)
    assert isinstance(base, SymOpt)
    recorder = RecordingEngine()  # the batched engine, keeping the last step's whole-matrix work
    base.engine = recorder  # one device, plain tensors: no FSDP adapter needed
    full_ms = timed(optimizer.step, device, warmup, repeats)
    buckets = recorder.work
    every = [(bucket, torch.arange(bucket.matrices.shape[0], device=device)) for bucket in buckets]

    def directions(share: list[tuple[Bucket, torch.Tensor]]) -> Callable[[], None]:
        def call() -> None:
            for bucket, index in share:
                bucket.compute(bucket.matrices[index])

        return call

    all_ms = timed(directions(every), device, warmup, repeats) if buckets else 0.0
    rest_ms = max(0.0, full_ms - all_ms)
    volume = gathered_bytes(buckets)
    rows = []
    for k in ks:
        if not buckets:
            share_ms, received = 0.0, 0
        else:
            share = share_of(buckets, k, heaviest_rank(buckets, k))
            share_ms = timed(directions(share), device, warmup, repeats)
            mine = sum(b.matrices[0].numel() * b.matrices.element_size() * len(i) for b, i in share)
            received = volume - mine
        comm_ms = received / (gbs * 1e9) * 1e3 if k > 1 else 0.0
        rows.append(
            {
                "k": k,
                "share_ms": share_ms,
                "rest_ms": rest_ms,
                "allgather_ms": comm_ms,
                "projected_ms": rest_ms + share_ms + comm_ms,
                "received_bytes_per_rank": received if k > 1 else 0,
            }
        )
    return {
        "preset": preset,
        "full_step_ms": full_ms,
        "directions_ms": all_ms,
        "whole_matrices": sum(b.matrices.shape[0] for b in buckets),
        "gathered_bytes_per_step": volume,
        "rows": rows,
    }


def planned_traffic(preset: str, shape: str, ks: list[int], bytes_per_entry: int = 4) -> dict[str, Any]:
    """Communication of the sharded step without running it (a meta-device model: any size):
    the whole-matrix directions gathered per step, and what each rank receives for each k (the
    matrices the other ranks own under the same FLOP-balanced assignment)."""
    dims = dict(SHAPES[shape])
    family, size = dims.pop("family"), dims.pop("size", None)
    with torch.device("meta"):
        model = build_model(family, size, **dims)
    entries: list[int] = []
    costs: list[float] = []
    for group in param_groups(model, preset):
        rule = get_rule(group["rule"])
        if rule.communication != "gather":
            continue
        layout, steps = parse_layout(group["layout"]), group.get("polar_steps", 5)
        for p in group["params"]:
            batch, m, n = layout.to_matrices(torch.empty(p.shape, device="meta"), rule.view).shape
            entries += [m * n] * batch
            costs += [polar_flops(m, n, steps)] * batch
    total = sum(entries) * bytes_per_entry
    received = {}
    for k in ks:
        owners = assign_by_cost(costs, k)
        owned = [sum(e for e, o in zip(entries, owners, strict=True) if o == r) for r in range(k)]
        received[k] = total - min(owned) * bytes_per_entry  # the rank owning least receives most
    return {
        "preset": preset,
        "whole_matrices": len(entries),
        "gathered_bytes_per_step": total,
        "max_received_bytes_per_rank": received,
    }


def print_table(result: dict[str, Any]) -> None:
    gbs = result["allgather_gbs"]
    print(f"{result['shape']} on {result['device']}; all-gather at an assumed {gbs:g} GB/s")
    header = f"{'share ms':>9} {'rest ms':>8} {'gather ms':>9} {'step ms':>8} {'MB/rank':>8}"
    print(f"{'preset':18} {'k':>2} {header}")
    for entry in result["presets"]:
        for row in entry["rows"]:
            mb = row["received_bytes_per_rank"] / 1e6
            print(
                f"{entry['preset']:18} {row['k']:>2} {row['share_ms']:9.3f} {row['rest_ms']:8.3f} "
                f"{row['allgather_ms']:9.3f} {row['projected_ms']:8.3f} {mb:8.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="nanogpt-cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="*", default=DEFAULT_PRESETS)
    parser.add_argument("--k", nargs="*", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--allgather-gbs", type=float, default=300.0, help="assumed all-gather bus bandwidth")
    parser.add_argument("--quick", action="store_true", help="tiny shape, few repeats: a smoke run")
    parser.add_argument(
        "--traffic-only",
        action="store_true",
        help="only the communication volume (any shape, no device time)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sharded_step.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.warmup, args.repeats, args.k = "tiny", 1, 3, [1, 2]
    if args.traffic_only:
        traffic = [planned_traffic(p, args.shape, args.k) for p in args.presets]
        print(f"{args.shape}: whole-matrix directions all-gathered per step (fp32)")
        for entry in traffic:
            received = entry["max_received_bytes_per_rank"].items()
            per_k = ", ".join(f"k={k}: {b / 1e6:.1f} MB" for k, b in received)
            total = entry["gathered_bytes_per_step"] / 1e6
            matrices = entry["whole_matrices"]
            print(f"  {entry['preset']:18} {matrices:5} matrices, {total:8.1f} MB; per rank: {per_k}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"shape": args.shape, "traffic": traffic}, indent=2))
        return 0
    device = torch.device(args.device)
    result = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "allgather_gbs": args.allgather_gbs,
        "date": time.strftime("%Y-%m-%d"),
        "presets": [
            measure(p, args.shape, device, args.k, args.warmup, args.repeats, args.allgather_gbs)
            for p in args.presets
        ],
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
