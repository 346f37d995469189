"""`symopt datasets upload|list|show|rm`: users' own data on the service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .remote import add_output, number, print_json, print_table, remote, show


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    datasets = commands.add_parser("datasets", help="upload, list and delete datasets on the service")
    sub = datasets.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")

    upload = sub.add_parser(
        "upload",
        help="upload a text, jsonl, parquet or tar file (or a directory of text files); prints its id",
    )
    upload.add_argument("path", type=Path)
    upload.add_argument(
        "--format", choices=("text", "jsonl", "parquet", "tar"), help="default: from the file's name"
    )
    upload.add_argument("--text-field", default="text", help="jsonl and parquet: the field holding the text")
    upload.add_argument("--name", help="a label (default: the file's name)")
    add_output(upload)
    upload.set_defaults(handler=upload_dataset)

    listing = sub.add_parser("list", help="this tenant's datasets, newest first")
    add_output(listing)
    listing.set_defaults(handler=list_datasets)

    detail = sub.add_parser("show", help="a dataset, with the tokenizers trained on it")
    detail.add_argument("dataset_id")
    add_output(detail)
    detail.set_defaults(handler=show_dataset)

    remove = sub.add_parser("rm", help="delete a dataset (refused while a job uses it)")
    remove.add_argument("dataset_id")
    remove.set_defaults(handler=remove_dataset)


def _rows(datasets: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("id", "name", "format", "documents", "characters", "created")]
    rows += [
        (
            d["id"],
            d["name"],
            d["format"],
            number(d["documents"]),
            number(d["characters"]),
            d["created_at"][:19],
        )
        for d in datasets
    ]
    return rows


@remote("datasets upload")
def upload_dataset(args: argparse.Namespace, client: Any) -> int:
    found = client.upload_dataset(args.path, format=args.format, text_field=args.text_field, name=args.name)
    if args.output == "json":
        print_json(found)
    else:
        print(found["id"])
    return 0


@remote("datasets list")
def list_datasets(args: argparse.Namespace, client: Any) -> int:
    found = client.datasets()
    if args.output == "json":
        print_json(found)
    else:
        print_table(_rows(found))
    return 0


@remote("datasets show")
def show_dataset(args: argparse.Namespace, client: Any) -> int:
    found = client.dataset(args.dataset_id)
    lines = [f"{found['id']}  {found['name']}  {found['format']}  sha256 {found['sha256']}"]
    lines.append(f"{found['documents']:,} documents, {found['characters']:,} characters")
    for tokenizer in found["tokenizers"]:
        lines.append(f"tokenizer {tokenizer['key']}: {tokenizer['kind']}, {tokenizer['vocab_size']:,} tokens")
    return show(args, found, "\n".join(lines))


@remote("datasets rm")
def remove_dataset(args: argparse.Namespace, client: Any) -> int:
    client.delete_dataset(args.dataset_id)
    return 0
