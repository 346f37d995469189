"""Optimizer step time: every symopt preset against torch.optim.AdamW and torch.optim.Muon + AdamW.

    python -m benchmarks.optimizer_step --shape nanogpt-cpu   # the nanoGPT CPU model (4 layers, d=128)
    python -m benchmarks.optimizer_step --shape qwen3-0.6b --device cuda
    python -m benchmarks.optimizer_step --shape qwen3-0.6b --compare polar   # polar backends only
    python -m benchmarks.optimizer_step --quick                        # a smoke run (CI)

Gradients are fixed random tensors; each optimizer runs `--warmup` steps, then `--steps` timed
steps (CUDA events on GPU, perf_counter on CPU) and the median is reported, with its ratio to
AdamW measured in the same run. The floor is the preset's orthogonalization FLOPs divided by the
matmul rate measured on the same device (bf16 on CUDA, fp32 on CPU). Each `--gram-presets` preset
is also timed with every polar factor from Gram Newton–Schulz ("(gram NS)" rows).

`--compare polar` times the polar backends side by side on the matrices one transformer block
hands to `polar` under `--polar-preset` (same-shape matrices stacked, as SymOpt batches them):
Polar Express and Gram Newton–Schulz, each with its analytic FLOP count; a step's total is the
block's times the number of blocks.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from symopt_core import PRESETS, build_model, build_optimizer, describe_params
from symopt_core.linalg import polar
from symopt_core.linalg.gram import gram_polar_flops
from symopt_core.optim.layout import parse_layout
from symopt_core.optim.sharding import polar_flops
from symopt_core.params import ParamClass

SHAPES: dict[str, dict[str, Any]] = {
    "nanogpt-cpu": {
        "family": "gpt2",
        "n_layers": 4,
        "n_heads": 4,
        "d_model": 128,
        "vocab_size": 65,
        "max_seq_len": 64,
    },
    "nanogpt-gpu": {
        "family": "gpt2",
        "n_layers": 6,
        "n_heads": 6,
        "d_model": 384,
        "vocab_size": 65,
        "max_seq_len": 256,
    },
    # The released Qwen3-0.6B depth (28 layers), as ANCHORS.md measures it; the paper's
    # 20-layer recipe shape is the model size "0.6b".
    "qwen3-0.6b": {"family": "qwen3", "size": "0.6b-28l", "max_seq_len": 1024},
    "tiny": {"family": "qwen3", "size": "tiny", "vocab_size": 65},
}
HIDDEN = {ParamClass.ATTN_QKV, ParamClass.ATTN_OUT, ParamClass.MLP_IN, ParamClass.MLP_OUT, ParamClass.HIDDEN}
# The rules whose direction is computed through `polar` (with the group's polar_method).
POLAR_RULES = (
    "polar",
    "normuon",
    "hybrid",
    "col_hybrid",
    "paired_hybrid",
    "centered_hybrid",
    "hybrid_polar_then_row",
)
POLAR_BACKENDS = ("polar_express", "gram_newton_schulz")
GRAM = {"all": {"polar_method": "gram_newton_schulz"}}  # overrides: every polar factor from GNS


@dataclass
class Row:
    optimizer: str
    median_ms: float
    ratio_to_adamw: float
    floor_ms: float | None
    ratio_to_floor: float | None


def build(shape: str, device: torch.device) -> nn.Module:
    dims = dict(SHAPES[shape])
    family, size = dims.pop("family"), dims.pop("size", None)
    torch.manual_seed(0)
    model = build_model(family, size, **dims).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return model


def torch_baselines(model: nn.Module) -> dict[str, Callable[[], list[torch.optim.Optimizer]]]:
    fused = next(model.parameters()).device.type in ("cuda", "cpu")
    infos = describe_params(model)
    named = dict(model.named_parameters())
    # Muon takes the hidden 2-D matrices (its docs: embeddings, heads and vectors go to AdamW).
    hidden = [named[n] for n, i in infos.items() if i.param_class in HIDDEN and named[n].ndim == 2]
    rest = [named[n] for n, i in infos.items() if not (i.param_class in HIDDEN and named[n].ndim == 2)]
    return {
        "torch AdamW (fused)": lambda: [torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)],
        "torch Muon + AdamW": lambda: [
            torch.optim.Muon(hidden, lr=0.02, weight_decay=0.0),
            torch.optim.AdamW(rest, lr=1e-3, fused=fused),
        ],
    }


def time_steps(
    optimizers: list[torch.optim.Optimizer], warmup: int, steps: int, device: torch.device
) -> float:
    for _ in range(warmup):
        for optimizer in optimizers:
            optimizer.step()
    samples = []
    for _ in range(steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for optimizer in optimizers:
                optimizer.step()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            for optimizer in optimizers:
                optimizer.step()
            samples.append((time.perf_counter() - began) * 1e3)
    return statistics.median(samples)


def matmul_rate(device: torch.device) -> float:
    """Measured FLOP/s of a large square matmul (bf16 on CUDA, fp32 on CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    repeats = 20 if device.type == "cuda" else 5
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - began)


def method_flops(method: str, m: int, n: int, steps: int) -> float:
    """FLOPs of one polar factor: the quintic's 4s²L + 2s³ per step (s = min(m, n), L = max),
    or Gram Newton–Schulz's 8s²L + 28s³ for 5 steps (gram_polar_flops)."""
    if method == "gram_newton_schulz":
        return gram_polar_flops(m, n, steps)
    return polar_flops(m, n, steps)


def polar_matrices(groups: list[dict[str, Any]]) -> dict[tuple[str, int, int, int], int]:
    """(polar_method, s, L, steps) -> how many s×L matrices (wide orientation) the groups' polar
    rules orthogonalize in one step."""
    counts: dict[tuple[str, int, int, int], int] = {}
    for group in groups:
        if group.get("rule") not in POLAR_RULES:
            continue
        for p in group["params"]:
            matrices = parse_layout(group["layout"]).to_matrices(torch.empty(p.shape, device="meta"))
            batch, m, n = matrices.shape
            key = (group["polar_method"], min(m, n), max(m, n), group["polar_steps"])
            counts[key] = counts.get(key, 0) + batch
    return counts


def orthogonalization_flops(optimizer: torch.optim.Optimizer) -> float:
    """FLOPs of the polar iterations in one step, per matrix by its group's polar_method."""
    counts = polar_matrices(optimizer.param_groups)
    return sum(count * method_flops(method, s, L, steps) for (method, s, L, steps), count in counts.items())


def run(
    shape: str,
    device: torch.device,
    warmup: int,
    steps: int,
    presets: list[str],
    gram_presets: list[str] | None = None,
) -> dict[str, Any]:
    model = build(shape, device)
    rate = matmul_rate(device)
    timings: dict[str, tuple[float, float | None]] = {}
    for name, make in torch_baselines(model).items():
        timings[name] = (time_steps(make(), warmup, steps, device), None)
    variants = [(preset, None) for preset in presets] + [(preset, GRAM) for preset in gram_presets or []]
    for preset, overrides in variants:
        optimizer = build_optimizer(model, preset, overrides=overrides)
        base = getattr(optimizer, "base", optimizer)
        floor = orthogonalization_flops(base) / rate * 1e3
        name = f"symopt {preset}" + (" (gram NS)" if overrides else "")
        timings[name] = (time_steps([optimizer], warmup, steps, device), floor or None)
    adamw = timings["torch AdamW (fused)"][0]
    rows = [
        Row(name, ms, ms / adamw, floor, ms / floor if floor else None)
        for name, (ms, floor) in timings.items()
    ]
    return {
        "shape": shape,
        "params": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_tflops": rate / 1e12,
        "warmup": warmup,
        "steps": steps,
        "date": time.strftime("%Y-%m-%d"),
        "rows": [asdict(row) for row in rows],
    }


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]], warmup: int, steps: int, device: torch.device
) -> dict[str, float]:
    """Median ms of each call, its samples taken in turn with the others' (A B A B ...), so that
    load that comes and goes on a shared machine falls on every call alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(steps):
        for name, call in calls.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                torch.cuda.synchronize()
                samples[name].append(start.elapsed_time(end))
            else:
                began = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - began) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def compare_polar(shape: str, device: torch.device, warmup: int, steps: int, preset: str) -> dict[str, Any]:
    """Polar Express vs Gram Newton–Schulz on one block's polar matrices, timed side by side."""
    dims = dict(SHAPES[shape])
    family, size = dims.pop("family"), dims.pop("size", None)
    with torch.device("meta"):  # shapes and layouts only: no memory for a 0.6B model
        model = build_model(family, size, **dims)
    optimizer = build_optimizer(model, preset)
    blocks = model.config.n_layers
    counts: dict[tuple[int, int, int], int] = {}
    for (_, s, L, polar_steps), count in polar_matrices(
        getattr(optimizer, "base", optimizer).param_groups
    ).items():
        counts[(s, L, polar_steps)] = counts.get((s, L, polar_steps), 0) + count
    generator = torch.Generator().manual_seed(0)
    rows = []
    for (s, L, polar_steps), count in sorted(counts.items()):
        # One block's stack, repeated `repeats` times per step (a shape not in every block: all).
        batch, repeats = (count // blocks, blocks) if count % blocks == 0 else (count, 1)
        stack = (torch.randn(batch, s, L, generator=generator) * 1e-3).to(device)
        row: dict[str, Any] = {"shape": f"{s}x{L}", "batch": batch, "repeats": repeats, "steps": polar_steps}
        calls = {method: partial(polar, stack, method, polar_steps) for method in POLAR_BACKENDS}
        for method, ms in time_interleaved(calls, warmup, steps, device).items():
            row[f"{method}_ms"] = ms
            row[f"{method}_gflop"] = batch * method_flops(method, s, L, polar_steps) / 1e9
        row["time_ratio"] = row["polar_express_ms"] / row["gram_newton_schulz_ms"]
        row["flop_ratio"] = row["polar_express_gflop"] / row["gram_newton_schulz_gflop"]
        rows.append(row)
    total = {
        key: sum(row[key] * row["repeats"] for row in rows)
        for method in POLAR_BACKENDS
        for key in (f"{method}_ms", f"{method}_gflop")
    }
    return {"preset": preset, "blocks": blocks, "rows": rows, "per_step": total}


def print_polar(result: dict[str, Any]) -> None:
    backends = result["polar_backends"]
    print(f"\npolar backends, {result['shape']} ({backends['preset']}), one block of {backends['blocks']}:")
    header = ("s x L", "batch", "PE ms", "GNS ms", "x", "PE GFLOP", "GNS GFLOP", "x")
    print("{:>10} {:>5} {:>10} {:>10} {:>5} {:>9} {:>9} {:>5}".format(*header))
    line = "{:>10} {:>5} {:10.2f} {:10.2f} {:5.2f} {:9.3f} {:9.3f} {:5.2f}"
    for row in backends["rows"]:
        pe, gns = row["polar_express_ms"], row["gram_newton_schulz_ms"]
        pe_flop, gns_flop = row["polar_express_gflop"], row["gram_newton_schulz_gflop"]
        print(
            line.format(row["shape"], row["batch"], pe, gns, pe / gns, pe_flop, gns_flop, pe_flop / gns_flop)
        )
    total = backends["per_step"]
    pe, gns = total["polar_express_ms"], total["gram_newton_schulz_ms"]
    pe_flop, gns_flop = total["polar_express_gflop"], total["gram_newton_schulz_gflop"]
    print(line.format("per step", "", pe, gns, pe / gns, pe_flop, gns_flop, pe_flop / gns_flop))


def print_table(result: dict[str, Any]) -> None:
    params, rate = result["params"] / 1e6, result["matmul_tflops"]
    print(f"{result['shape']}: {params:.2f}M params on {result['device']} ({result['threads']} threads, ")
    print(f"  torch {result['torch']}, matmul {rate:.3f} TFLOP/s)")
    print(f"{'optimizer':28} {'median ms':>10} {'x AdamW':>8} {'floor ms':>9} {'x floor':>8}")
    for row in result["rows"]:
        floor = f"{row['floor_ms']:.3f}" if row["floor_ms"] else "-"
        ratio = f"{row['ratio_to_floor']:.1f}" if row["ratio_to_floor"] else "-"
        median, versus = row["median_ms"], row["ratio_to_adamw"]
        print(f"{row['optimizer']:28} {median:10.3f} {versus:8.2f} {floor:>9} {ratio:>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="nanogpt-cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument(
        "--gram-presets",
        nargs="*",
        default=["symmetric"],
        help="also timed with Gram Newton–Schulz polar factors",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        choices=["step", "polar"],
        default=["step"],
        help="optimizer steps, polar backends",
    )
    parser.add_argument("--polar-preset", default="symmetric", help="whose matrices --compare polar times")
    parser.add_argument("--quick", action="store_true", help="tiny shape, few steps: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/optimizer_step.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.warmup, args.steps = "tiny", 1, 3
    device = torch.device(args.device)
    result: dict[str, Any] = {"shape": args.shape}
    if "step" in args.compare:
        result = run(args.shape, device, args.warmup, args.steps, args.presets, args.gram_presets)
        print_table(result)
    if "polar" in args.compare:
        result["polar_backends"] = compare_polar(
            args.shape, device, args.warmup, args.steps, args.polar_preset
        )
        result.setdefault("threads", torch.get_num_threads())
        result.setdefault("torch", torch.__version__)
        print_polar(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
