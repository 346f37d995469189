"""How long a job waits for its data: tokenized without a cache (what every job paid before the
token cache), tokenized into the cache (the first job), and read from it (every later job).

    python -m benchmarks.job_data            # the full pystdlib corpus (8 MiB): char, byte, bpe 8192
    python -m benchmarks.job_data --quick    # 256 KiB of it, bpe 512

One thread (torch and the tokenizers library's Rust threads), the three paths side by side in one
run, `--repeats` times each; the medians and the ratios go to the table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before the tokenizers library starts its pool

import torch

from symopt_core.data import build_dataset, corpus_source, tokenized_dataset


def _seconds(action: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def measure(tokenizer: str, vocab_size: int | None, options: dict[str, Any], repeats: int) -> dict[str, Any]:
    source = corpus_source("pystdlib", data_root=None, options=options)

    def cached(directory: Path) -> Any:
        return tokenized_dataset(
            source, tokenizer, cache_dir=directory, val_fraction=0.1, vocab_size=vocab_size, model_dir=None
        )

    def into_fresh_cache() -> Any:
        with tempfile.TemporaryDirectory() as directory:
            return cached(Path(directory))

    row: dict[str, Any] = {"tokenizer": tokenizer if vocab_size is None else f"{tokenizer} {vocab_size}"}
    if vocab_size is None:  # the direct path knows char and byte only
        row["uncached_s"] = statistics.median(
            _seconds(lambda: build_dataset("pystdlib", tokenizer, **options), repeats)
        )
    row["first_job_s"] = statistics.median(_seconds(into_fresh_cache, repeats))
    with tempfile.TemporaryDirectory() as directory:
        first = cached(Path(directory))
        row["later_job_s"] = statistics.median(_seconds(lambda: cached(Path(directory)), repeats))
    row["tokens"] = len(first.train) + len(first.val)
    row["speedup_later_vs_first"] = row["first_job_s"] / row["later_job_s"]
    if "uncached_s" in row:
        row["speedup_later_vs_uncached"] = row["uncached_s"] / row["later_job_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/job_data.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    options: dict[str, Any] = {"max_bytes": 256 * 1024} if args.quick else {}
    repeats = 2 if args.quick else args.repeats
    cases = [("char", None), ("byte", None), ("bpe", 512 if args.quick else 8192)]
    rows = [measure(kind, size, options, repeats) for kind, size in cases]
    print(
        f"{'tokenizer':<10} {'tokens':>10} {'no cache':>9} {'first job':>10} {'later job':>10} {'ratio':>8}"
    )
    for row in rows:
        uncached = f"{row['uncached_s']:.3f}" if "uncached_s" in row else "-"
        print(
            f"{row['tokenizer']:<10} {row['tokens']:>10,} {uncached:>9} {row['first_job_s']:>10.3f} "
            f"{row['later_job_s']:>10.4f} {row['speedup_later_vs_first']:>7.0f}x"
        )
    result = {"corpus": "pystdlib", "options": options, "repeats": repeats, "rows": rows,
              "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
