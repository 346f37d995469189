"""What every command that talks to the service shares: the client, `--output`, and exit codes.

Exit codes: 0 done; 1 the service or the job failed; 2 bad input (an invalid spec, an unknown
id, a request the object's state refuses); 3 authentication (no key, or a rejected one).
Errors print the server's own message.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_AUTH, EXIT_CANCELLED = 1, 2, 3, 130

Handler = Callable[[argparse.Namespace, Any], int]


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", choices=("table", "json"), default="table", help="json: machine-readable, for scripts"
    )


def remote(name: str) -> Callable[[Handler], Callable[[argparse.Namespace], int]]:
    """Run a handler(args, client) with a client of the service, turning errors into the
    server's message on stderr and the exit code of their kind."""

    def decorate(handler: Handler) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            import httpx

            from symopt_core.errors import ConfigError

            from ..client import (
                ApiError,
                AuthError,
                Client,
                ConflictError,
                CredentialsError,
                NotFoundError,
                PayloadTooLargeError,
                ValidationError,
            )

            try:
                with Client() as client:
                    return handler(args, client)
            except (CredentialsError, AuthError) as error:
                return fail(name, getattr(error, "message", str(error)), EXIT_AUTH)
            except (ValidationError, PayloadTooLargeError, NotFoundError, ConflictError) as error:
                return fail(name, error.message, EXIT_BAD_INPUT)
            except ConfigError as error:  # a local problem: a spec file missing, a bad --set
                return fail(name, str(error), EXIT_BAD_INPUT)
            except ApiError as error:
                return fail(name, f"the service failed ({error.status}): {error.message}", EXIT_FAILED)
            except httpx.TransportError as error:
                return fail(name, f"cannot reach the service: {error}", EXIT_FAILED)

        return run

    return decorate


def fail(name: str, message: str, code: int) -> int:
    print(f"symopt {name}: {message}", file=sys.stderr)
    return code


def show(args: argparse.Namespace, data: Any, text: str) -> int:
    """`data` as JSON with --output json, else `text`; exit code 0."""
    if args.output == "json":
        print_json(data)
    else:
        print(text)
    return 0


def print_json(value: Any, stream: IO[str] | None = None) -> None:
    print(json.dumps(value, indent=2, default=str), file=stream or sys.stdout)


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first row is the header."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def print_table(rows: Sequence[Sequence[str]], stream: IO[str] | None = None) -> None:
    for line in table_lines(rows):
        print(line, file=stream or sys.stdout)


def number(value: Any, digits: int = 4) -> str:
    """A table cell for a number that may be missing or "nan"."""
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.3g}"
    return str(value)


def watch_exit_code(status: str) -> int:
    """0 succeeded, 1 failed or diverged, 130 cancelled."""
    return {"succeeded": 0, "cancelled": EXIT_CANCELLED, "pruned": EXIT_CANCELLED}.get(status, EXIT_FAILED)
