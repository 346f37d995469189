"""`symopt sweep submit|list|show|watch|cancel`: sweeps on the service, through the client."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .local import add_settings
from .remote import add_output, number, print_json, print_table, remote, show, table_lines


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = commands.add_parser("sweep", help="submit, follow and cancel sweeps on the service")
    sub = sweep.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND")
    for name in ("submit", "create"):
        submit = sub.add_parser(
            name,
            help="queue a sweep spec (YAML/JSON); prints its id"
            + (" (= submit)" if name == "create" else ""),
        )
        submit.add_argument("spec", type=Path)
        add_settings(submit, "n_trials=4")
        add_output(submit)
        submit.set_defaults(handler=submit_sweep)
    listing = sub.add_parser("list", help="this tenant's sweeps, newest first")
    listing.add_argument("--status", help="comma-separated statuses")
    listing.add_argument("--limit", type=int, default=20)
    add_output(listing)
    listing.set_defaults(handler=list_sweeps)
    show = sub.add_parser("show", help="progress, trials and the best so far")
    show.add_argument("sweep_id")
    show.add_argument("--watch", action="store_true", help="refresh until the sweep has finished")
    add_output(show)
    show.set_defaults(handler=show_sweep)
    watch = sub.add_parser("watch", help="= show --watch")
    watch.add_argument("sweep_id")
    add_output(watch)
    watch.set_defaults(handler=show_sweep, watch=True)
    cancel = sub.add_parser("cancel", help="cancel a sweep and its running trials")
    cancel.add_argument("sweep_id")
    add_output(cancel)
    cancel.set_defaults(handler=cancel_sweep)


@remote("sweep submit")
def submit_sweep(args: argparse.Namespace, client: Any) -> int:
    from .local import parse_settings

    sweep = client.submit_sweep(args.spec, overrides=parse_settings(args.settings))
    if args.output != "json":  # the id alone on stdout (`id=$(symopt sweep submit ...)`), the space beside
        print("\n".join(space_lines(sweep.data.get("search_space"))), file=sys.stderr)
    return show(args, sweep.data, sweep.id)


def space_lines(space: dict[str, dict[str, Any]] | None) -> list[str]:
    """The resolved search space, per preset: what `auto` became, one path per line."""
    lines = []
    for preset, paths in (space or {}).items():
        lines.append(f"search space ({preset}):")
        rows = []
        for path, bounds in paths.items():
            if bounds.get("type") == "categorical":
                values = ", ".join(str(choice) for choice in bounds.get("choices") or [])
            else:
                whole = bounds.get("type") in ("int", "log_int", "pow2")
                low, high = (bounds.get(end) for end in ("low", "high"))
                values = f"{number(int(low) if whole else low)} .. {number(int(high) if whole else high)}"
            rows.append(["  " + path, str(bounds.get("type")), values])
        lines += table_lines(rows)
    return lines


@remote("sweep list")
def list_sweeps(args: argparse.Namespace, client: Any) -> int:
    sweeps = client.sweeps(status=args.status, limit=args.limit)
    if args.output == "json":
        print_json([sweep.data for sweep in sweeps])
        return 0
    rows = [["id", "name", "status", "trials", "best", "created"]]
    for sweep in sweeps:
        best = sweep.data["best"]
        rows.append(
            [
                sweep.id,
                sweep.data["name"],
                sweep.status,
                f"{sweep.data['trials_finished']}/{sweep.data['n_trials']}",
                number(best["objective"]) if best else "-",
                str(sweep.data["created_at"])[:19].replace("T", " "),
            ]
        )
    print_table(rows)
    return 0


def render(sweep: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    done, total = sweep["trials_finished"], sweep["n_trials"]
    bar = "#" * round(30 * done / max(1, total))
    lines = [
        f"sweep {sweep['id']} {sweep['name']!r}: {sweep['status']}  [{bar:<30}] {done}/{total} trials, "
        f"{sweep['trials_running']} running"
    ]
    params = sorted({p for t in trials for p in t["params"]})
    agents = sweep["spec"].get("executor") == "agents"  # their trials name the agent that ran them
    rows = [["#", "preset", "state", "objective", *params, *(["agent"] if agents else [])]]
    for t in trials:
        values = [number(t["params"].get(p), 4) for p in params]
        host = [t.get("agent_host") or "-"] if agents else []
        rows.append([str(t["trial_number"]), t["preset"], t["state"], number(t["objective"]), *values, *host])
    lines += table_lines(rows)
    for preset, best in sweep["best_by_preset"].items():
        lines.append(f"best {preset}: {best['objective']:.4f} with {best['params']} (job {best['job_id']})")
    if sweep.get("error"):
        lines.append(f"error: {sweep['error']}")
    return "\n".join(lines)


@remote("sweep show")
def show_sweep(args: argparse.Namespace, client: Any) -> int:
    from ..client import SWEEP_FINAL

    sweep = client.sweep(args.sweep_id)
    # On a terminal each update reprints the table; into a log or a pipe, only the lines that
    # changed (the progress line, trials that moved) follow the first table.
    terminal, shown = sys.stdout.isatty(), set[str]()
    while True:
        trials = sweep.list_trials()
        if args.output == "json":
            print_json({"sweep": sweep.data, "trials": trials})
        else:
            lines = render(sweep.data, trials).splitlines()
            new = lines if terminal else [line for line in lines if line not in shown]
            if new:
                print("\n".join(new), flush=True)
            shown |= set(lines)
        if not args.watch or sweep.status in SWEEP_FINAL:
            return 0 if sweep.status != "failed" else 1
        time.sleep(5)
        if terminal:
            print(file=sys.stdout)
        sweep.refresh()


@remote("sweep cancel")
def cancel_sweep(args: argparse.Namespace, client: Any) -> int:
    sweep = client.sweep(args.sweep_id).cancel()
    return show(args, sweep.data, f"sweep {sweep.id} {sweep.status}")
