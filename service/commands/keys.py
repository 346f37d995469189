"""`symopt keys create|list|revoke`: API keys, on the server's database or, with `--remote`,
through the service's admin API as the saved key (an admin key sees every tenant's keys; a
tenant's key only its own tenant's, and it may revoke only those that are not admin keys).

A revoked key gets a 401 on its next request. Revoking a key that is already revoked, or the last
active admin key, is refused (exit code 2, the reason on stderr): without an admin key nobody
could create or revoke keys over the API.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from .remote import EXIT_AUTH, EXIT_BAD_INPUT, add_output, fail, print_json, print_table, remote


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", help="create a key for a tenant (the tenant is created if new)")
    create.add_argument("--tenant", required=True, help="tenant name")
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument("--admin", action="store_true", help="an admin key")
    _add_where(create)
    create.set_defaults(handler=_either("create", _create_local, _create_remote))

    listing = sub.add_parser(
        "list", help="keys with tenant, name, admin flag, created and revoked (no secrets)"
    )
    _add_where(listing)
    add_output(listing)
    listing.set_defaults(handler=_either("list", _list_local, _list_remote))

    revoke = sub.add_parser("revoke", help="revoke a key: its next request gets a 401")
    revoke.add_argument("key_id", help="the key's id (the part after `sym_`, as `keys list` shows it)")
    _add_where(revoke)
    add_output(revoke)
    revoke.set_defaults(handler=_either("revoke", _revoke_local, _revoke_remote))


def _add_where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="SQLAlchemy URL (default: $SYMOPT_DATABASE_URL, else embedded)")
    where.add_argument(
        "--remote",
        action="store_true",
        help="through the service's API as the saved key ($SYMOPT_URL, $SYMOPT_API_KEY, or `symopt login`)",
    )


def _either(
    command: str,
    local: Callable[[argparse.Namespace], int],
    through_api: Callable[[argparse.Namespace, Any], int],
) -> Callable[[argparse.Namespace], int]:
    """One handler for both forms: the database's, or the API's with `--remote`."""
    name = f"keys {command}"
    over_http = remote(name)(_forbidden_is_auth(name, through_api))
    return lambda args: over_http(args) if args.remote else local(args)


def _forbidden_is_auth(
    name: str, handler: Callable[[argparse.Namespace, Any], int]
) -> Callable[[argparse.Namespace, Any], int]:
    """A 403 (a tenant's key where an admin key is needed) exits as an authentication problem."""

    def run(args: argparse.Namespace, client: Any) -> int:
        from ..client import ApiError

        try:
            return handler(args, client)
        except ApiError as error:
            if error.status != 403:
                raise
            return fail(name, error.message, EXIT_AUTH)

    return run


# -- on the database (the server's operator: every tenant's keys) ------------------------------


def _store(args: argparse.Namespace) -> Any:
    from ..store import Store
    from .server import schema_ready, settings_of

    settings = settings_of(args)
    return Store.connect(settings.resolved_database_url()) if schema_ready(settings, "keys") else None


def _create_local(args: argparse.Namespace) -> int:
    from ..store.keys import create_api_key, get_or_create_tenant

    store = _store(args)
    if store is None:
        return EXIT_BAD_INPUT
    with store.transaction() as session:
        tenant = get_or_create_tenant(session=session, name=args.tenant)
        key = create_api_key(session=session, tenant_id=tenant.id, name=args.name, is_admin=args.admin)
    store.close()
    print(key)
    return 0


def _list_local(args: argparse.Namespace) -> int:
    from ..store.keys import list_api_keys

    store = _store(args)
    if store is None:
        return EXIT_BAD_INPUT
    with store.read() as session:
        keys = [_public(key) for key in list_api_keys(session=session)]
    store.close()
    return _show_keys(args, keys)


def _revoke_local(args: argparse.Namespace) -> int:
    from ..errors import ConflictError, NotFoundError
    from ..store.keys import revoke_api_key

    store = _store(args)
    if store is None:
        return EXIT_BAD_INPUT
    try:
        with store.transaction() as session:
            revoked = _public(revoke_api_key(session=session, key_id=args.key_id))
    except (NotFoundError, ConflictError) as error:
        return fail("keys revoke", str(error), EXIT_BAD_INPUT)
    finally:
        store.close()
    return _show_revoked(args, revoked)


def _public(key: Any) -> dict[str, Any]:
    """A store's ApiKeyInfo as the API shows it (times in ISO 8601)."""
    fields = dataclasses.asdict(key)
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in fields.items()}


# -- through the API (as the saved key) ---------------------------------------------------------


def _create_remote(args: argparse.Namespace, client: Any) -> int:
    body = {"tenant": args.tenant, "name": args.name, "admin": args.admin}
    print(client.transport.request("POST", "/v1/keys", json=body)["api_key"])
    return 0


def _list_remote(args: argparse.Namespace, client: Any) -> int:
    return _show_keys(args, client.transport.request("GET", "/v1/keys")["data"])


def _revoke_remote(args: argparse.Namespace, client: Any) -> int:
    return _show_revoked(args, client.transport.request("POST", f"/v1/keys/{args.key_id}/revoke"))


# -- output -------------------------------------------------------------------------------------


def _show_keys(args: argparse.Namespace, keys: list[dict[str, Any]]) -> int:
    if args.output == "json":
        print_json(keys)
        return 0
    header = ["id", "tenant", "name", "admin", "created", "revoked"]
    rows = [
        [
            key["key_id"],
            key["tenant"],
            key["name"] or "-",
            "yes" if key["is_admin"] else "no",
            _time(key["created_at"]),
            _time(key["revoked_at"]),
        ]
        for key in keys
    ]
    print_table([header, *rows])
    return 0


def _show_revoked(args: argparse.Namespace, key: dict[str, Any]) -> int:
    if args.output == "json":
        print_json(key)
    else:
        label = f", {key['name']!r}" if key["name"] else ""
        print(f"revoked key {key['key_id']} (tenant {key['tenant']!r}{label}); its next request gets a 401")
    return 0


def _time(value: str | None) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"
