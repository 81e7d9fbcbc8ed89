#!/usr/bin/env python3
"""Manage the gateway's client API keys (safe while the gateway runs)."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from dotenv import load_dotenv

from gateway.keystore import (
    ADMIN,
    BUDGET_FIELDS,
    CLIENT,
    RATE_FIELDS,
    ROLES,
    ClientKey,
    KeyStore,
    KeyStoreError,
)
from gateway.storage import ERRORS, is_postgres_url, open_database, shown
from gateway.usage.stats import StatsQueryError, budget_use, iso, parse_group_by, parse_time, spend_by_client, totals

T = TypeVar("T")
DEFAULT_DB = "./data/incoming_keys.db"
OPEN_ERRORS: tuple[type[BaseException], ...] = (*ERRORS, ValueError)


def _run(db: str, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    async def go() -> T:
        try:
            store = await KeyStore.open(db)
        except OPEN_ERRORS as e:  # unreadable path, not a database, locked, server down, bad URL...
            raise click.ClickException(f"cannot open key database {shown(db)}: {str(e) or type(e).__name__}") from None
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
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _row(k: ClientKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "key": k.prefix + "…",
        "status": "active" if k.active else "revoked",
        "role": k.role,
        "requests": k.request_count,
        "last_used": _when(k.last_used_at),
        "created": _when(k.created_at),
    }


def _table(rows: list[dict[str, Any]], empty: str = "no keys yet: add one with `manage_keys.py add NAME`") -> str:
    if not rows:
        return empty
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
@click.option(
    "--database-url",
    envvar="DATABASE_URL",
    default=None,
    help="postgresql:// URL of a PostgreSQL database to use instead of the SQLite file (env DATABASE_URL).",
)
@click.pass_context
def cli(ctx: click.Context, db: str, database_url: str | None) -> None:
    """Manage GLM Gateway client keys.

    \b
    Example:
        python manage_keys.py add cline-laptop
        python manage_keys.py list
        python manage_keys.py budget cline-laptop --daily-usd 5 --monthly-usd 50
        python manage_keys.py limits cline-laptop --rpm 60 --tpm 200000
        python manage_keys.py revoke cline-laptop
        python manage_keys.py stats
        python manage_keys.py usage --since 7d --by provider
        DATABASE_URL=postgresql://gw@db/gateway python manage_keys.py list
    """
    if database_url and not is_postgres_url(database_url):
        raise click.BadParameter("must be a postgresql:// URL", param_hint="'--database-url' / DATABASE_URL")
    ctx.obj = database_url or db


@cli.command()
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin key: may read /_status and every client's usage.")
@click.pass_obj
def add(db: str, name: str, admin: bool) -> None:
    """Create a key named NAME and print it (the only time it is shown).

    Example: python manage_keys.py add aider-desktop   (or: add ops --admin)
    """
    key, plaintext = _run(db, lambda s: s.add(name, ADMIN if admin else CLIENT))
    click.echo(plaintext)
    click.echo(f"created {key.role} key {key.id} ({key.name}); store it now, it cannot be shown again", err=True)


@cli.command()
@click.argument("ref")
@click.argument("new_role", metavar="ROLE", type=click.Choice(ROLES))
@click.pass_obj
def role(db: str, ref: str, new_role: str) -> None:
    """Make the key REF (id, name or the key itself) an admin or a plain client.

    An admin key may read /_status and every client's usage; a client key only its own. A
    running gateway applies it within a second. Example: python manage_keys.py role ops admin
    """
    key = _run(db, lambda s: s.set_role(ref, new_role))
    click.echo(f"key {key.id} ({key.name}) is now {key.role}")


def _money(value: float | None) -> str:
    return "none" if value is None else f"${value:,.2f}"


def _count(value: int | None) -> str:
    return "none" if value is None else f"{value:,}"


def _set_limits(db: str, ref: str, values: dict[str, Any], clear: bool, fields: tuple[str, ...]) -> ClientKey:
    given = {k: v for k, v in values.items() if v is not None}
    if clear and given:
        raise click.UsageError("--clear removes every one of them; give it alone")
    if clear:
        given = dict.fromkeys(fields)
    if not given:
        return _run(db, lambda s: s.find(ref))  # nothing to change: show them
    return _run(db, lambda s: s.set_limits(ref, given))


@cli.command()
@click.argument("ref")
@click.option("--daily-usd", type=click.FloatRange(min=0), help="USD per UTC day.")
@click.option("--monthly-usd", type=click.FloatRange(min=0), help="USD per UTC month.")
@click.option("--daily-tokens", type=click.IntRange(min=0), help="Tokens (prompt + completion) per UTC day.")
@click.option("--monthly-tokens", type=click.IntRange(min=0), help="Tokens per UTC month.")
@click.option("--clear", is_flag=True, help="Remove every budget of the key.")
@click.pass_obj
def budget(db: str, ref: str, clear: bool, **values: Any) -> None:
    """Set (any subset), show (no option) or --clear the budgets of the key REF.

    Over a budget the gateway answers 429 insufficient_quota until the UTC day or month
    resets; a running gateway applies changes within a second.

    Example: python manage_keys.py budget cline-laptop --daily-usd 5 --monthly-usd 50 --daily-tokens 2000000
    """
    k = _set_limits(db, ref, values, clear, BUDGET_FIELDS)
    click.echo(f"key {k.id} ({k.name}) budgets: daily {_money(k.daily_usd)}, monthly {_money(k.monthly_usd)}, "
               f"daily tokens {_count(k.daily_tokens)}, monthly tokens {_count(k.monthly_tokens)}")


@cli.command()
@click.argument("ref")
@click.option("--rpm", type=click.IntRange(min=0), help="Requests per sliding minute.")
@click.option("--tpm", type=click.IntRange(min=0), help="Tokens per sliding minute (estimated up front).")
@click.option("--clear", is_flag=True, help="Remove both rate limits of the key.")
@click.pass_obj
def limits(db: str, ref: str, clear: bool, **values: Any) -> None:
    """Set, show (no option) or --clear the rate limits of the key REF.

    Over a limit the gateway answers 429 rate_limit_exceeded with Retry-After.
    Example: python manage_keys.py limits cline-laptop --rpm 60 --tpm 200000
    """
    k = _set_limits(db, ref, values, clear, RATE_FIELDS)
    click.echo(f"key {k.id} ({k.name}) rate limits: {_count(k.rpm)} requests and {_count(k.tpm)} tokens per minute")


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


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def _budget_cell(use: dict[str, dict[str, float]] | None) -> str:
    if not use:
        return "-"
    cells = []
    for name, u in use.items():
        shown = (lambda v: f"${v:,.2f}") if name.endswith("_usd") else (lambda v: f"{v:,.0f}")
        cells.append(f"{name.replace('_', ' ')} {shown(u['used'])}/{shown(u['limit'])} ({u['fraction']:.0%})")
    return "; ".join(cells)


def _ledger(db: str, query: Callable[[Any], Awaitable[T]]) -> Callable[[KeyStore], Awaitable[T]]:
    """An action that runs ``query`` on a connection to the usage ledger (in the same database)."""

    async def action(store: KeyStore) -> T:
        conn = await open_database(db)
        try:
            return await query(conn)
        finally:
            await conn.close()

    return action


@cli.command()
@click.pass_obj
def stats(db: str) -> None:
    """Usage per key: requests in all, and requests, tokens and cost today and this month (UTC).

    A key with budgets also shows what it used of each. Rows reach the database within
    USAGE_FLUSH_INTERVAL seconds of each request. Example: python manage_keys.py stats
    """
    now = time.time()

    async def gather(store: KeyStore) -> tuple[list[ClientKey], dict[int | None, dict[str, Any]]]:
        keys = await store.list()
        return keys, await _ledger(db, lambda conn: spend_by_client(conn, now))(store)

    keys, spend = _run(db, gather)
    budgeted = any(budget_use(k, None) for k in keys)
    rows = []
    for k in sorted(keys, key=lambda k: -k.request_count):
        used = spend.get(k.id, {})
        row = {"name": k.name, "status": "active" if k.active else "revoked", "requests": k.request_count,
               "today": used.get("today_requests", 0), "tokens_today": used.get("today_tokens", 0),
               "cost_today": _usd(used.get("today_cost_usd", 0.0)), "month": used.get("month_requests", 0),
               "tokens_month": used.get("month_tokens", 0), "cost_month": _usd(used.get("month_cost_usd", 0.0))}
        if budgeted:
            row["budgets"] = _budget_cell(budget_use(k, used))
        row["last_used"] = _when(k.last_used_at)
        rows.append(row)
    click.echo(_table(rows))
    if keys:
        active = sum(k.active for k in keys)
        total = sum(k.request_count for k in keys)
        click.echo(f"\n{len(keys)} keys ({active} active), {total} requests in all")


def _option(param: str, parse: Callable[[str], T]) -> T:
    try:
        return parse(param)
    except StatsQueryError as e:
        raise click.BadParameter(str(e).removeprefix(f"{e.param} "), param_hint=f"'{e.param}'") from None


@cli.command()
@click.option("--since", default="7d", show_default=True,
              help="Start: 7d, 24h, 30m ago, 'today', epoch seconds or an ISO date/date-time (UTC).")
@click.option("--until", default="now", show_default=True, help="End, in the same forms.")
@click.option("--by", "by", default="provider", show_default=True,
              help="Group by provider, client, model, day or hour (comma-separated for several).")
@click.pass_obj
def usage(db: str, since: str, until: str, by: str) -> None:
    """Requests, tokens, cost and savings from the usage ledger, grouped.

    \b
    Example:
        python manage_keys.py usage --since 7d --by provider
        python manage_keys.py usage --since 2026-01-01 --by client,day
    """
    now = time.time()
    start = _option(since, lambda t: parse_time(t, now, "--since"))
    end = _option(until, lambda t: parse_time(t, now, "--until"))
    groups = _option(by, lambda t: parse_group_by(t, "--by"))
    if not groups:
        raise click.BadParameter("give at least one of provider, client, model, day", param_hint="'--by'")
    if start >= end:
        raise click.BadParameter(f"--since ({iso(start)}) must be before --until ({iso(end)})",
                                 param_hint="'--since'")

    async def query(conn: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return (await totals(conn, start, end, group_by=groups), (await totals(conn, start, end))[0])

    found, total = _run(db, _ledger(db, query))
    rows = []
    for g in found:
        row = {name: g["client"] if name == "client" else g[name] for name in groups}
        row.update(requests=g["requests"], failed=g["failed_requests"], prompt=g["prompt_tokens"],
                   completion=g["completion_tokens"], cached=g["cached_tokens"], reasoning=g["reasoning_tokens"],
                   cost=_usd(g["cost_usd"]), saved=_usd(g["saved_usd"]))
        if g["unpriced_requests"]:
            row["cost"] += f" (+{g['unpriced_requests']} unpriced)"
        rows.append({k: "-" if v is None else v for k, v in row.items()})
    click.echo(f"usage from {iso(start)} to {iso(end)}")
    click.echo(_table(rows, empty="no requests in that window"))
    if rows:
        click.echo(f"\n{total['requests']} requests, {total['total_tokens']:,} tokens, "
                   f"{_usd(total['cost_usd'])}, saved {_usd(total['saved_usd'])} against the primary provider")


def main() -> None:
    load_dotenv(os.environ.get("ENV_FILE", ".env"), override=False)
    cli(prog_name="manage_keys.py")


if __name__ == "__main__":
    main()
