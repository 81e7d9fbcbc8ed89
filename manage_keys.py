#!/usr/bin/env python3
"""Manage the gateway's client API keys (safe while the gateway runs)."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import Any, Awaitable, Callable, TypeVar

import click
from dotenv import load_dotenv

from gateway.keystore import ClientKey, KeyStore, KeyStoreError

T = TypeVar("T")
DEFAULT_DB = "./data/incoming_keys.db"


def _run(db: str, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    async def go() -> T:
        try:
            store = await KeyStore.open(db)
        except Exception as e:  # unreadable path, not a database, locked for too long...
            raise click.ClickException(f"cannot open key database {db}: {e}") from None
        try:
            return await action(store)
        except KeyStoreError as e:
            raise click.ClickException(str(e)) from None
        finally:
            await store.close()

    return asyncio.run(go())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _row(k: ClientKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "key": k.prefix + "…",
        "status": "active" if k.active else "revoked",
        "requests": k.request_count,
        "last_used": _when(k.last_used_at),
        "created": _when(k.created_at),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no keys yet: add one with `manage_keys.py add NAME`"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.upper().ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


@click.group()
@click.option(
    "--db",
    envvar="INCOMING_KEY_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="SQLite file of client keys (env INCOMING_KEY_DB).",
)
@click.pass_context
def cli(ctx: click.Context, db: str) -> None:
    """Manage GLM Gateway client keys.

    \b
    Example:
        python manage_keys.py add cline-laptop
        python manage_keys.py list
        python manage_keys.py revoke cline-laptop
    """
    ctx.obj = db


@cli.command()
@click.argument("name")
@click.pass_obj
def add(db: str, name: str) -> None:
    """Create a key named NAME and print it (the only time it is shown).

    Example: python manage_keys.py add aider-desktop
    """
    key, plaintext = _run(db, lambda s: s.add(name))
    click.echo(plaintext)
    click.echo(f"created key {key.id} ({key.name}); store it now, it cannot be shown again", err=True)


@cli.command("list")
@click.pass_obj
def list_keys(db: str) -> None:
    """List keys (id, name, a short prefix, status, usage); never the keys themselves."""
    keys = _run(db, lambda s: s.list())
    click.echo(_table([_row(k) for k in keys]))


@cli.command()
@click.argument("ref")
@click.pass_obj
def revoke(db: str, ref: str) -> None:
    """Revoke the key given by REF: its id, its name or the key itself.

    A running gateway rejects it within a second. Example: python manage_keys.py revoke 3
    """
    key = _run(db, lambda s: s.set_revoked(ref, True))
    click.echo(f"revoked key {key.id} ({key.name})")


@cli.command()
@click.argument("ref")
@click.pass_obj
def enable(db: str, ref: str) -> None:
    """Re-enable a revoked key (REF: id, name or the key itself).

    Example: python manage_keys.py enable cline-laptop
    """
    key = _run(db, lambda s: s.set_revoked(ref, False))
    click.echo(f"enabled key {key.id} ({key.name})")


@cli.command()
@click.pass_obj
def stats(db: str) -> None:
    """Usage per key: requests and last use (written by the gateway every few seconds)."""
    keys = _run(db, lambda s: s.list())
    rows = [
        {"name": k.name, "status": "active" if k.active else "revoked", "requests": k.request_count,
         "last_used": _when(k.last_used_at)}
        for k in sorted(keys, key=lambda k: -k.request_count)
    ]
    click.echo(_table(rows))
    if keys:
        active = sum(k.active for k in keys)
        total = sum(k.request_count for k in keys)
        click.echo(f"\n{len(keys)} keys ({active} active), {total} requests in all")


def main() -> None:
    load_dotenv(os.environ.get("ENV_FILE", ".env"), override=False)
    cli(prog_name="manage_keys.py")


if __name__ == "__main__":
    main()
