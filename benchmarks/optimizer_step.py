"""Optimizer step time: every symopt preset against torch.optim.AdamW and torch.optim.Muon + AdamW.

    python -m benchmarks.optimizer_step --shape nanogpt-cpu   # the nanoGPT CPU model (4 layers, d=128)
    python -m benchmarks.optimizer_step --shape qwen3-0.6b --device cuda
    python -m benchmarks.optimizer_step --quick                        # a smoke run (CI)

Gradients are fixed random tensors; each optimizer runs `--warmup` steps, then `--steps` timed
steps (CUDA events on GPU, perf_counter on CPU) and the median is reported, with its ratio to
AdamW measured in the same run. The floor is the preset's orthogonalization FLOPs divided by the
matmul rate measured on the same device (bf16 on CUDA, fp32 on CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from symopt_core import PRESETS, build_model, build_optimizer, describe_params
from symopt_core.optim.layout import parse_layout
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


def orthogonalization_flops(optimizer: torch.optim.Optimizer) -> float:
    """FLOPs of the quintic iterations in one step: 4m²n + 2m³ per matrix per step (m ≤ n)."""
    total = 0.0
    for group in optimizer.param_groups:
        rule = group.get("rule")
        if rule not in (
            "polar",
            "normuon",
            "hybrid",
            "col_hybrid",
            "paired_hybrid",
            "centered_hybrid",
            "hybrid_polar_then_row",
        ):
            continue
        for p in group["params"]:
            matrices = parse_layout(group["layout"]).to_matrices(torch.empty(p.shape, device="meta"))
            batch, m, n = matrices.shape
            m, n = min(m, n), max(m, n)
            total += batch * group["polar_steps"] * (4 * m * m * n + 2 * m**3)
    return total


def run(shape: str, device: torch.device, warmup: int, steps: int, presets: list[str]) -> dict[str, Any]:
    model = build(shape, device)
    rate = matmul_rate(device)
    timings: dict[str, tuple[float, float | None]] = {}
    for name, make in torch_baselines(model).items():
        timings[name] = (time_steps(make(), warmup, steps, device), None)
    for preset in presets:
        optimizer = build_optimizer(model, preset)
        base = getattr(optimizer, "base", optimizer)
        floor = orthogonalization_flops(base) / rate * 1e3
        timings[f"symopt {preset}"] = (time_steps([optimizer], warmup, steps, device), floor or None)
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
    parser.add_argument("--quick", action="store_true", help="tiny shape, few steps: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/optimizer_step.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.warmup, args.steps = "tiny", 1, 3
    result = run(args.shape, torch.device(args.device), args.warmup, args.steps, args.presets)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
