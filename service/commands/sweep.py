"""`symopt sweep create|show|cancel`: sweeps through the REST API (the client)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = commands.add_parser("sweep", help="create and follow sweeps on the service")
    sweep_commands = sweep.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND")
    create = sweep_commands.add_parser("create", help="submit a sweep spec (YAML/JSON); prints its id")
    create.add_argument("spec", type=Path)
    create.set_defaults(handler=create_sweep)
    show = sweep_commands.add_parser("show", help="progress, trials and the best so far")
    show.add_argument("sweep_id")
    show.add_argument("--watch", action="store_true", help="refresh until the sweep has finished")
    show.add_argument("--output", choices=("table", "json"), default="table")
    show.set_defaults(handler=show_sweep)
    cancel = sweep_commands.add_parser("cancel", help="cancel a sweep and its running trials")
    cancel.add_argument("sweep_id")
    cancel.set_defaults(handler=cancel_sweep)


def _client() -> Any:
    from ..client import Client

    return Client()


def create_sweep(args: argparse.Namespace) -> int:
    import yaml

    from ..client import ApiError

    try:
        body = yaml.safe_load(args.spec.read_text())
        sweep = _client().submit_sweep(body)
    except ApiError as error:
        print(f"symopt sweep: {error.message}", file=sys.stderr)
        return 2 if error.status == 422 else 3 if error.status == 401 else 1
    print(sweep["id"])
    return 0


def _render(sweep: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    done, total = sweep["trials_finished"], sweep["n_trials"]
    bar = "#" * round(30 * done / max(1, total))
    lines = [
        f"sweep {sweep['id']} {sweep['name']!r}: {sweep['status']}  [{bar:<30}] {done}/{total} trials, "
        f"{sweep['trials_running']} running"
    ]
    params = sorted({p for t in trials for p in t["params"]})
    lines.append("  ".join(["#", "preset", "status", "objective", *params]))
    for t in trials:
        values = [
            f"{t['params'][p]:.4g}" if isinstance(t["params"].get(p), float) else str(t["params"].get(p))
            for p in params
        ]
        objective = f"{t['objective']:.4f}" if t["objective"] is not None else "-"
        lines.append("  ".join([str(t["trial_number"]), t["preset"], t["status"], objective, *values]))
    for preset, best in sweep["best_by_preset"].items():
        lines.append(f"best {preset}: {best['objective']:.4f} with {best['params']} (job {best['job_id']})")
    return "\n".join(lines)


def show_sweep(args: argparse.Namespace) -> int:
    client = _client()
    while True:
        sweep, trials = client.sweep(args.sweep_id), client.trials(args.sweep_id)
        if args.output == "json":
            print(json.dumps({"sweep": sweep, "trials": trials}, indent=2))
        else:
            print(_render(sweep, trials), flush=True)
        if not args.watch or sweep["status"] in ("succeeded", "failed", "cancelled"):
            return 0
        time.sleep(5)
        print()


def cancel_sweep(args: argparse.Namespace) -> int:
    print(_client().cancel_sweep(args.sweep_id)["status"])
    return 0
