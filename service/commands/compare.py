"""`symopt compare ID ID ...`: jobs side by side (table) and their loss curves (PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .remote import add_output, number, print_json, print_table, remote


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compare = commands.add_parser("compare", help="jobs side by side, and their loss curves on shared axes")
    compare.add_argument("job_ids", nargs="+", metavar="ID")
    compare.add_argument(
        "--target", type=float, help="loss for 'tokens to target' (default: the worst of the jobs' best)"
    )
    compare.add_argument(
        "--plot",
        type=Path,
        default=Path("compare.png"),
        help="where the loss-curve PNG goes (default compare.png)",
    )
    add_output(compare)
    compare.set_defaults(handler=run_compare)


@remote("compare")
def run_compare(args: argparse.Namespace, client: Any) -> int:
    from ..client import compare, plot_comparison

    jobs = [client.job(job_id) for job_id in args.job_ids]
    comparison = compare(jobs, target=args.target)
    plot = plot_comparison(jobs, args.plot)
    if args.output == "json":
        print_json({**comparison.to_dict(), "plot": str(plot)})
        return 0
    rows = [
        [
            "job",
            "name",
            "status",
            "preset",
            "lr",
            "batch",
            "best val",
            "(step)",
            "final val",
            "tokens to target",
            "wall s",
        ]
    ]
    for row in comparison.jobs:
        rows.append(
            [
                row.job_id[:12],
                row.name,
                row.status,
                row.preset,
                number(row.lr, 3) if row.lr is None else f"{row.lr:.3g}",
                str(row.batch_size),
                number(row.best_val_loss),
                number(row.best_val_step),
                number(row.final_val_loss),
                number(row.tokens_to_target),
                number(row.wall_time_s, 1),
            ]
        )
    print_table(rows)
    target = "-" if comparison.target is None else f"{comparison.target:.4f}"
    print(f"tokens to target: first evaluation at or below val loss {target}; curves in {plot}")
    return 0
