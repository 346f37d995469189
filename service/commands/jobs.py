"""`symopt jobs submit|list|show|watch|logs|cancel|checkpoint`: jobs on the service, through the client."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .local import add_settings
from .remote import EXIT_CANCELLED, add_output, number, print_json, print_table, remote, show, watch_exit_code


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = commands.add_parser("jobs", help="submit, list, watch and cancel jobs on the service")
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    submit = sub.add_parser("submit", help="queue a job spec (YAML/JSON); prints its id")
    submit.add_argument("spec", type=Path, help="a YAML or JSON job spec")
    add_settings(submit)
    submit.add_argument(
        "--watch", action="store_true", help="then follow it to the end (exit code as `watch`)"
    )
    _add_progress(submit)
    add_output(submit)
    submit.set_defaults(handler=submit_job)

    listing = sub.add_parser("list", help="this tenant's jobs, newest first")
    listing.add_argument("--status", help="comma-separated: queued,running,succeeded,failed,cancelled,...")
    listing.add_argument("--name", help="only jobs of this name")
    listing.add_argument("--sweep", dest="sweep_id", help="only the trials of this sweep")
    listing.add_argument("--limit", type=int, default=20)
    add_output(listing)
    listing.set_defaults(handler=list_jobs)

    show = sub.add_parser("show", help="a job: status, progress, result, spec")
    show.add_argument("job_id")
    add_output(show)
    show.set_defaults(handler=show_job)

    watch = sub.add_parser(
        "watch", help="follow a job live; exit 0 succeeded, 1 failed/diverged, 130 cancelled"
    )
    watch.add_argument("job_id")
    _add_progress(watch)
    add_output(watch)
    watch.set_defaults(handler=watch_job)

    logs = sub.add_parser("logs", help="a job's log lines")
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job has finished")
    add_output(logs)
    logs.set_defaults(handler=job_logs)

    cancel = sub.add_parser("cancel", help="stop a job (its Ray task stops within seconds)")
    cancel.add_argument("job_id")
    add_output(cancel)
    cancel.set_defaults(handler=cancel_job)

    checkpoint = sub.add_parser("checkpoint", help="download a job's newest checkpoint")
    checkpoint.add_argument("job_id")
    checkpoint.add_argument("path", type=Path, nargs="?", default=Path("."), help="a file or directory")
    checkpoint.set_defaults(handler=download_checkpoint)


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="how progress shows on stderr (auto: a bar on a terminal, a line per update otherwise)",
    )


def _summary(job: Any) -> dict[str, str]:
    spec, result = job.spec, job.result or {}
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "model": f"{spec['model'].get('family')}/{spec['model'].get('size') or 'custom'}",
        "preset": str(spec["optimizer"]["preset"]),
        "step": f"{job.step}/{spec['steps']}",
        "best_val_loss": number(job.data.get("best_val_loss")),
        "val_loss": number(result.get("val_loss")),
        "created": str(job.data["created_at"])[:19].replace("T", " "),
    }


@remote("jobs submit")
def submit_job(args: argparse.Namespace, client: Any) -> int:
    from .local import parse_settings

    job = client.submit(args.spec, overrides=parse_settings(args.settings))
    if not args.watch:
        return show(args, job.data, job.id)
    print(f"symopt jobs submit: job {job.id} on {client.url}", file=sys.stderr, flush=True)
    return _watch(job, args)


@remote("jobs list")
def list_jobs(args: argparse.Namespace, client: Any) -> int:
    jobs = client.jobs(status=args.status, name=args.name, sweep_id=args.sweep_id, limit=args.limit)
    if args.output == "json":
        print_json([job.data for job in jobs])
        return 0
    rows = [_summary(job) for job in jobs]
    header = ["id", "name", "status", "model", "preset", "step", "best_val_loss", "created"]
    print_table([header] + [[row[column] for column in header] for row in rows])
    return 0


@remote("jobs show")
def show_job(args: argparse.Namespace, client: Any) -> int:
    job = client.job(args.job_id)
    if args.output == "json":
        print_json(job.data)
        return 0
    summary = _summary(job)
    for key in ("id", "name", "status", "model", "preset", "step", "best_val_loss", "val_loss", "created"):
        print(f"{key:>14}  {summary[key]}")
    for key in ("attempt", "queued_reason", "diverged_at", "sweep_id", "trial_number"):
        if job.data.get(key) not in (None, 0) or key == "attempt":
            print(f"{key:>14}  {job.data.get(key)}")
    if job.data.get("error"):
        print(f"{'error':>14}  {job.data['error'].strip().splitlines()[-1]}")
    return 0


def summary_line(job: Any) -> str:
    """How a watched job ended. A job stopped before its result (cancelled, pruned, failed) still
    has the evaluations it stored: its newest val_loss and the best one are shown from those."""
    result = job.result or {}
    val_loss, best = result.get("val_loss"), result.get("best_val_loss", job.data.get("best_val_loss"))
    if val_loss is None:
        series = job.metrics(names=["val_loss"])
        val_loss = series[-1]["value"] if series else None
    ended = f"job {job.id} {job.status} at step {job.step}"
    return f"{ended}: val_loss={number(val_loss)} best_val_loss={number(best)}"


def _watch(job: Any, args: argparse.Namespace) -> int:
    try:
        job.wait(progress="none" if args.output == "json" else args.progress)
    except KeyboardInterrupt:
        print(
            f"\nsymopt: stopped watching; job {job.id} goes on (`symopt jobs cancel {job.id}` stops it)",
            file=sys.stderr,
        )
        return EXIT_CANCELLED
    if args.output == "json":
        print_json(job.data)
    else:
        print(summary_line(job))
        if job.data.get("error"):
            print(job.data["error"].strip().splitlines()[-1], file=sys.stderr)
    return watch_exit_code(job.status)


@remote("jobs watch")
def watch_job(args: argparse.Namespace, client: Any) -> int:
    return _watch(client.job(args.job_id), args)


@remote("jobs logs")
def job_logs(args: argparse.Namespace, client: Any) -> int:
    job = client.job(args.job_id)
    lines = job.follow_logs() if args.follow else iter(job.logs())
    for line in lines:
        if args.output == "json":  # JSON lines: one object per log line, as they come
            print(json.dumps(line, default=str), flush=True)
        else:
            print(
                f"{str(line['time'])[:19].replace('T', ' ')}  step {line['step']}  {line['message']}",
                flush=True,
            )
    return 0


@remote("jobs cancel")
def cancel_job(args: argparse.Namespace, client: Any) -> int:
    job = client.job(args.job_id).cancel()
    return show(args, job.data, f"job {job.id} {job.status}")


@remote("jobs checkpoint")
def download_checkpoint(args: argparse.Namespace, client: Any) -> int:
    print(client.job(args.job_id).download_checkpoint(args.path))
    return 0
