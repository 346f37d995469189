"""`symopt login URL`: check an API key against the service and save url + key (mode 0600)."""

from __future__ import annotations

import argparse
import getpass
import sys

from .remote import EXIT_AUTH, EXIT_FAILED, fail


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    login = commands.add_parser(
        "login", help="save the service URL and an API key for the CLI and the client"
    )
    login.add_argument("url", help="the service, e.g. http://symopt.internal:8000")
    login.add_argument(
        "--api-key-stdin",
        action="store_true",
        help="read the key from stdin instead of asking (also when stdin is not a terminal)",
    )
    login.set_defaults(handler=run_login)


def run_login(args: argparse.Namespace) -> int:
    import httpx

    from ..client import AuthError, Client
    from ..credentials import write_credentials

    if args.api_key_stdin or not sys.stdin.isatty():
        key = sys.stdin.readline().strip()
    else:
        key = getpass.getpass("API key (from `symopt keys create` or the first `symopt serve`): ").strip()
    if not key:
        return fail("login", "no API key given", EXIT_AUTH)
    url = args.url.rstrip("/")
    try:
        with Client(url, key, retries=1) as client:
            me = client.transport.request("GET", "/v1/me")
    except AuthError as error:
        return fail("login", f"{url} rejected the key ({error.message}); nothing was saved", EXIT_AUTH)
    except httpx.TransportError as error:
        return fail("login", f"cannot reach {url}: {error}; nothing was saved", EXIT_FAILED)
    path = write_credentials(url, key)
    print(f"logged in to {url} as tenant {me['tenant']!r} (key {me['key_id']}); saved in {path} (mode 0600)")
    return 0
