"""Local commands: `symopt train` runs a job on this machine; `presets` and `rules` list registries."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from symopt_core.errors import ConfigError, SymoptError

from .remote import print_table


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = commands.add_parser("train", help="run a job spec locally, with a progress bar")
    train.add_argument("spec", type=Path, help="a YAML or JSON job spec")
    add_settings(train)
    train.add_argument(
        "--run-dir",
        type=Path,
        help="where metrics, the loss curve and checkpoints go (default: runs/<name>-<time>)",
    )
    train.add_argument("--resume", type=Path, help="a checkpoint file or a run directory to continue from")
    train.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when the spec asks for a GPU)")
    train.add_argument(
        "--data-root", type=Path, help="where corpora are looked up (default: $SYMOPT_DATA_DIR)"
    )
    train.add_argument(
        "--model-root",
        type=Path,
        help="where model.path names of family hf are looked up (a save_pretrained directory under it)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_train)
    for name, handler, summary in (
        ("presets", list_presets, "optimizer presets"),
        ("rules", list_rules, "update rules and their symmetry groups"),
    ):
        commands.add_parser(name, help=summary).set_defaults(handler=handler)


def add_settings(parser: argparse.ArgumentParser, example: str = "optimizer.preset=muon") -> None:
    """The repeatable `--set KEY=VALUE` of every command that takes a spec."""
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a field by dotted path, e.g. --set {example} (repeatable; values are YAML)",
    )


def parse_settings(settings: list[str]) -> dict[str, str]:
    parsed = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ConfigError(f"Invalid --set {setting!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.01")
        parsed[key.strip()] = value
    return parsed


def load_spec_or_explain(path: Path, settings: list[str], command: str) -> Any:
    """The spec at `path` with `--set` overrides, or None after printing what is wrong with it."""
    from pydantic import ValidationError

    from symopt_core.spec import describe_validation_error, load_spec

    try:
        return load_spec(path, parse_settings(settings))
    except ValidationError as error:
        print(f"symopt {command}: invalid spec: {describe_validation_error(error)}", file=sys.stderr)
    except ValueError as error:  # ConfigError: a bad --set, a missing file
        print(f"symopt {command}: invalid spec: {error}", file=sys.stderr)
    return None


def run_train(args: argparse.Namespace) -> int:
    from symopt_core.assets import Assets
    from symopt_core.training import train

    spec = load_spec_or_explain(args.spec, args.settings, "train")
    if spec is None:
        return 2
    run_dir = args.run_dir or Path("runs") / f"{spec.name or args.spec.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(spec.model_dump_json(indent=2))
    with (run_dir / "metrics.jsonl").open("a") as log, _Progress(spec.steps, quiet=args.quiet) as progress:

        def report(event: Any) -> None:
            log.write(json.dumps(event.to_dict()) + "\n")
            log.flush()
            progress.update(event)

        try:
            result = train(
                spec,
                report=report,
                run_dir=run_dir,
                resume_from=args.resume,
                device=args.device,
                assets=Assets(data_root=args.data_root, model_root=args.model_root),
            )
        except SymoptError as error:
            progress.bar.close()
            print(f"symopt train: {error}", file=sys.stderr)
            return 2
    if importlib.util.find_spec("matplotlib") is not None:
        plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
    else:  # `pip install symopt` alone: the run is whole without its plot
        print("symopt train: no loss.png (matplotlib: pip install 'symopt[client]')", file=sys.stderr)
    print(
        f"status={result.status} steps={result.steps} tokens={result.tokens} "
        f"wall_time_s={result.wall_time_s:.1f} tokens_per_s={result.tokens_per_s:.0f} "
        f"best_val_loss={_fmt(result.best_val_loss)} best_val_step={result.best_val_step} run_dir={run_dir}"
    )
    print(f"val_loss={_fmt(result.val_loss)}")
    return 0 if result.status == "succeeded" else 1


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


class _Progress:
    """A tqdm bar fed by training events: step, loss, val loss, tokens/s (tqdm adds the ETA)."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, disable=quiet, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.values: dict[str, str] = {}

    def update(self, event: Any) -> None:
        if event.kind == "status" and event.data.get("status") == "resumed":
            self.bar.n = event.step
        if event.kind == "metrics":
            self.bar.update(event.step - self.bar.n)
            self.values["loss"] = f"{event.data['train_loss']:.4f}"
            self.values["tok/s"] = f"{event.data['tokens_per_s']:.0f}"
        elif event.kind == "eval":
            self.values["val"] = str(event.data["val_loss"])[:6]
        self.bar.set_postfix(self.values, refresh=False)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def plot_losses(metrics: Path, target: Path) -> None:
    """Train and validation loss against steps, from a metrics.jsonl file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_points, val_points = [], []
    for line in metrics.read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "metrics":
            train_points.append((event["step"], event["data"]["train_loss"]))
        elif event["kind"] == "eval" and isinstance(event["data"]["val_loss"], float):
            val_points.append((event["step"], event["data"]["val_loss"]))
    figure, axes = plt.subplots(figsize=(7, 4))
    for points, label in ((train_points, "train"), (val_points, "val")):
        if points:
            axes.plot(*zip(*points, strict=True), label=label, marker="." if label == "val" else None)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def list_presets(args: argparse.Namespace) -> int:
    from symopt_core.presets import PRESETS

    rows = [("preset", "base lr", "summary")]
    rows += [(name, f"{p.lr:g}", p.summary) for name, p in PRESETS.items()]
    print_table(rows)
    return 0


def list_rules(args: argparse.Namespace) -> int:
    from symopt_core.optim import RULES

    rows = [("rule", "group", "summary")]
    rows += [(name, str(rule.symmetry), rule.summary) for name, rule in RULES.items()]
    print_table(rows)
    return 0
