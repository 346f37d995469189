"""`symopt study submit|list|show|watch|cancel|report`: comparison studies, through the client."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .local import add_settings
from .remote import add_output, number, print_json, print_table, remote, show, table_lines


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    study = commands.add_parser("study", help="compare optimizer stacks: tuned, seeded, equal-budget")
    sub = study.add_subparsers(dest="study_command", required=True, metavar="COMMAND")
    submit = sub.add_parser("submit", help="queue a study spec (YAML/JSON); prints its id")
    submit.add_argument("spec", type=Path)
    add_settings(submit, "tuning.n_trials=4")
    add_output(submit)
    submit.set_defaults(handler=submit_study)
    listing = sub.add_parser("list", help="this tenant's studies, newest first")
    listing.add_argument("--status", help="comma-separated statuses")
    listing.add_argument("--limit", type=int, default=20)
    add_output(listing)
    listing.set_defaults(handler=list_studies)
    show = sub.add_parser("show", help="progress and the result so far")
    show.add_argument("study_id")
    show.add_argument("--watch", action="store_true", help="follow until the study has finished")
    add_output(show)
    show.set_defaults(handler=show_study)
    watch = sub.add_parser("watch", help="= show --watch")
    watch.add_argument("study_id")
    add_output(watch)
    watch.set_defaults(handler=show_study, watch=True)
    cancel = sub.add_parser("cancel", help="cancel a study with its sweeps and runs")
    cancel.add_argument("study_id")
    add_output(cancel)
    cancel.set_defaults(handler=cancel_study)
    report = sub.add_parser("report", help="write report.md with its PNG figures into a directory")
    report.add_argument("study_id")
    report.add_argument("directory", type=Path, nargs="?", default=None, help="default: study-<id>/")
    report.set_defaults(handler=report_study)


@remote("study submit")
def submit_study(args: argparse.Namespace, client: Any) -> int:
    from .local import parse_settings

    study = client.submit_study(args.spec, overrides=parse_settings(args.settings))
    return show(args, study.data, study.id)


@remote("study list")
def list_studies(args: argparse.Namespace, client: Any) -> int:
    studies = client.studies(status=args.status, limit=args.limit)
    if args.output == "json":
        print_json([study.data for study in studies])
        return 0
    rows = [["id", "name", "status", "stage", "candidates", "created"]]
    for study in studies:
        names = ", ".join(c["name"] for c in study.data["spec"]["candidates"])
        created = str(study.data["created_at"])[:19].replace("T", " ")
        rows.append([study.id, study.data["name"], study.status, study.stage, names, created])
    print_table(rows)
    return 0


def render(study: dict[str, Any]) -> list[str]:
    """The study as a table: per candidate its tuning, runs and objective; then the verdicts
    against the baseline and between the other candidates."""
    progress, result = study["progress"], study["result"] or {}
    confirmation = progress["confirmation"]
    lines = [
        f"study {study['id']} {study['name']!r}: {study['status']} ({study['stage']}); confirmation runs "
        f"{confirmation['finished']}/{confirmation['planned']}"
    ]
    rows = [["candidate", "tuning", "tuned lr", "batch", "objective mean", "std", "t interval", "runs"]]
    for candidate in result.get("candidates", []):
        tuning = progress["tuning"][candidate["name"]]
        params = (candidate["tuned"] or {}).get("params") or {}
        summary = candidate["summary"] or {}
        interval = summary.get("t") or {}
        rows.append(
            [
                candidate["name"],
                f"{tuning['status']} {tuning['trials_finished']}/{tuning['n_trials']}",
                number(params.get("optimizer.lr"), 4),
                number(params.get("batch.size")),
                number(summary.get("mean")),
                number(summary.get("std")),
                f"[{number(interval.get('low'))}, {number(interval.get('high'))}]" if interval else "-",
                str(sum(1 for run in candidate["runs"] if run["objective"] is not None)),
            ]
        )
    lines += table_lines(rows)
    lines += [f"  {verdict}" for verdict in result.get("verdicts", [])]
    pairwise = result.get("pairwise_verdicts", [])  # absent from results stored before it existed
    if pairwise:
        lines += ["between the other candidates:"] + [f"  {verdict}" for verdict in pairwise]
    caveats = result.get("caveats", [])  # what the verdicts rest on (absent from older results)
    if caveats:
        lines += ["caveats:"] + [f"  ! {caveat}" for caveat in caveats]
    if study.get("error"):
        lines.append(f"error: {study['error']}")
    return lines


@remote("study show")
def show_study(args: argparse.Namespace, client: Any) -> int:
    study = client.study(args.study_id)
    if args.watch:
        study.wait(progress="none" if args.output == "json" else "auto")
    if args.output == "json":
        print_json(study.data)
    else:
        print("\n".join(render(study.data)))
    return 1 if study.status == "failed" else 0


@remote("study cancel")
def cancel_study(args: argparse.Namespace, client: Any) -> int:
    study = client.study(args.study_id).cancel()
    return show(args, study.data, f"study {study.id} {study.status}")


@remote("study report")
def report_study(args: argparse.Namespace, client: Any) -> int:
    study = client.study(args.study_id)
    print(study.report(args.directory or Path(f"study-{study.id}")))
    return 0
