"""Loss parity of bf16 matrix iterations on CPU: the nanoGPT CPU configuration trained with the
orthogonalization in fp32 (the CPU default) and in bf16 (`polar_dtype: bfloat16`), seed by seed.

    python -m benchmarks.bf16_parity                         # symmetric, seeds 1337-1339, 2000 steps
    python -m benchmarks.bf16_parity --preset muon --seeds 1 2 3
    python -m benchmarks.bf16_parity --quick                 # 30 steps, 2 seeds: the plumbing

Both dtypes of a seed run back to back in this process (one thread), so their step times compare
on the same machine state. The verdict is the study's (service/studies/stats.py): a difference in
final val loss is claimed only when the bootstrap and the t interval both exclude zero, and the
seed spread of each dtype is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from service.studies.stats import paired_difference, summarize
from symopt_core import load_spec, train

SPEC = Path(__file__).resolve().parents[1] / "examples" / "shakespeare_char_cpu.yaml"
DTYPES = ("float32", "bfloat16")


def run_once(preset: str, seed: int, dtype: str, steps: int) -> dict[str, Any]:
    spec = load_spec(SPEC).model_dump(mode="json", exclude_none=True)
    spec["optimizer"] = {"preset": preset, "weight_decay": 0.1, "overrides": {"all": {"polar_dtype": dtype}}}
    spec.update(seed=seed, steps=steps, name=f"bf16-parity-{preset}-{dtype}-{seed}")
    if steps < 500:
        spec["eval"] = {"every": steps, "batches": 2}
        spec["schedule"] = {"kind": "constant"}
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(spec, run_dir=run_dir)
    return {
        "seed": seed,
        "dtype": dtype,
        "val_loss": result.val_loss,
        "best_val_loss": result.best_val_loss,
        "wall_time_s": result.wall_time_s,
        "tokens_per_s": result.tokens_per_s,
    }


def run(preset: str, seeds: list[int], steps: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    runs = [run_once(preset, seed, dtype, steps) for seed in seeds for dtype in DTYPES]
    by_dtype = {dtype: [r for r in runs if r["dtype"] == dtype] for dtype in DTYPES}
    pairs = {
        r["seed"]: (r["val_loss"], next(o["val_loss"] for o in by_dtype["float32"] if o["seed"] == r["seed"]))
        for r in by_dtype["bfloat16"]
    }
    difference = paired_difference("bf16", "fp32", pairs)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "preset": preset,
        "steps": steps,
        "seeds": seeds,
        "runs": runs,
        "val_loss": {d: summarize([r["val_loss"] for r in by_dtype[d]]).to_dict() for d in DTYPES},
        "wall_time_s_median": {d: statistics.median(r["wall_time_s"] for r in by_dtype[d]) for d in DTYPES},
        "bf16_minus_fp32": difference.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="symmetric")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338, 1339])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = args.seeds[:2], 30
    result = run(args.preset, args.seeds, args.steps)
    for row in result["runs"]:
        print(f"{result['preset']:10} seed {row['seed']:5}  {row['dtype']:8}  val {row['val_loss']:.4f}  "
              f"{row['wall_time_s']:6.1f} s  {row['tokens_per_s']:8.0f} tok/s")  # fmt: skip
    for dtype in DTYPES:
        summary = result["val_loss"][dtype]
        print(f"{dtype:8} val loss {summary['mean']:.4f} ± {summary['std']:.4f} (k = {summary['n']}), "
              f"median wall {result['wall_time_s_median'][dtype]:.1f} s")  # fmt: skip
    print(result["bf16_minus_fp32"]["verdict"])
    out = args.out or Path(f"benchmarks/results/bf16_parity_{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
