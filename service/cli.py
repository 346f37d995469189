"""The `symopt` command line: one parser, one module per command group."""

from __future__ import annotations

import argparse
import os
import sys

from .commands import agent, compare, datasets, jobs, local, login, models, run, server, study, sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symopt", description="symmetry-compatible optimizer service")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local.register(commands)
    server.register(commands)
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
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        return int(handler(args) or 0)
    except BrokenPipeError:  # `symopt ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
