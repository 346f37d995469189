"""The `symopt` command line: one parser, one module per command group."""

from __future__ import annotations

import argparse
import os
import sys

from symopt_core.extras import EXTRA_OF

from .commands import agent, compare, datasets, jobs, keys, local, login, models, run, server, study, sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symopt", description="symmetry-compatible optimizer service")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local.register(commands)
    server.register(commands)
    keys.register(commands)
    run.register(commands)
    login.register(commands)
    jobs.register(commands)
    sweep.register(commands)
    study.register(commands)
    agent.register(commands)
    compare.register(commands)
    datasets.register(commands)
    models.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    after: list[str] | None = None
    if "--" in argv:  # `symopt agent ID [options] -- COMMAND ...`: the command is not parsed
        split = argv.index("--")
        argv, after = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)
    if after is not None:
        if not hasattr(args, "after_dashes"):
            parser.error("`--` is for `symopt agent ID -- COMMAND ...`, which runs COMMAND per trial")
        args.after_dashes = after
    handler = args.handler
    try:
        return int(handler(args) or 0)
    except BrokenPipeError:  # `symopt ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModuleNotFoundError as error:  # `pip install symopt` alone: a command of an extra
        top = (error.name or "").split(".")[0]
        if top not in EXTRA_OF:
            raise
        print(
            f"symopt {args.command}: needs the {top} package, which this installation lacks: "
            f"pip install 'symopt[{EXTRA_OF[top]}]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
