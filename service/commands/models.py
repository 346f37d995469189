"""`symopt models [upload|uploads|rm|classify]`: the model families, and users' own models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .remote import add_output, print_json, print_table, remote


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser(
        "models", help="model families and their sizes; upload and classify your own transformers models"
    )
    models.set_defaults(handler=list_families)
    sub = models.add_subparsers(dest="models_command", metavar="COMMAND")

    upload = sub.add_parser(
        "upload", help="upload a save_pretrained directory (or a tar of it); prints its id"
    )
    upload.add_argument("path", type=Path)
    upload.add_argument("--name", help="a label (default: the directory's name)")
    add_output(upload)
    upload.set_defaults(handler=upload_model)

    listing = sub.add_parser("uploads", help="this tenant's uploaded models, newest first")
    add_output(listing)
    listing.set_defaults(handler=list_uploads)

    remove = sub.add_parser("rm", help="delete an uploaded model (refused while a job uses it)")
    remove.add_argument("model_id")
    remove.set_defaults(handler=remove_model)

    classify = sub.add_parser(
        "classify", help="which class, layout and rule each parameter of a job spec's model gets"
    )
    classify.add_argument("spec", type=Path, help="a YAML or JSON job spec (its model, preset and mapping)")
    add_output(classify)
    classify.set_defaults(handler=classify_model)


def list_families(args: argparse.Namespace) -> int:
    from symopt_core.models import MODEL_FAMILIES

    rows = [("family", "sizes", "dims")]
    rows += [(name, ", ".join(f.sizes), ", ".join(f.dims())) for name, f in MODEL_FAMILIES.items()]
    rows.append(("hf", "model.config or model.path", "any transformers causal LM (its config's fields)"))
    print_table(rows)
    return 0


@remote("models upload")
def upload_model(args: argparse.Namespace, client: Any) -> int:
    found = client.upload_model(args.path, name=args.name)
    if args.output == "json":
        print_json(found)
    else:
        print(found["id"])
    return 0


@remote("models uploads")
def list_uploads(args: argparse.Namespace, client: Any) -> int:
    found = client.uploaded_models()
    if args.output == "json":
        print_json(found)
        return 0
    rows = [("id", "name", "model_type", "tokenizer", "created")]
    rows += [
        (m["id"], m["name"], m["model_type"], "yes" if m["has_tokenizer"] else "no", m["created_at"][:19])
        for m in found
    ]
    print_table(rows)
    return 0


@remote("models rm")
def remove_model(args: argparse.Namespace, client: Any) -> int:
    client.delete_model(args.model_id)
    return 0


@remote("models classify")
def classify_model(args: argparse.Namespace, client: Any) -> int:
    from symopt_core.spec_tree import spec_tree

    tree = spec_tree(args.spec)
    optimizer = tree.get("optimizer") or {}
    data = tree.get("data") or {}
    found = client.classify(
        tree["model"],
        preset=optimizer.get("preset", "symmetric"),
        mapping=optimizer.get("mapping"),
        vocab_size=data.get("vocab_size"),
    )
    if args.output == "json":
        print_json(found)
        return 0
    rows = [("parameter", "shape", "class", "layout", "rule")]
    rows += [
        (p["name"], "x".join(map(str, p["shape"])), p["class"], p["layout"], p.get("rule") or "-")
        for p in found["params"]
    ]
    print_table(rows)
    return 0
