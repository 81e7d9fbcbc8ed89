#!/usr/bin/env python3
"""List, switch and warm the local models of a running gateway (its /admin/local API)."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

import click
from dotenv import load_dotenv

DEFAULT_URL = "http://127.0.0.1:18080"
POLL = 0.25  # seconds between looks at a switch in progress


class Gateway:
    """The admin API over urllib: a few calls a command, nothing to keep open."""

    def __init__(self, url: str, key: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def call(self, method: str, path: str, body: object | None = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise click.ClickException(f"{e.code}: {_message(e.read())}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise click.ClickException(f"cannot reach the gateway at {self.url}: {reason}") from None


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500] or "no message"


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "-"
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.upper().ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _row(m: dict[str, Any]) -> dict[str, Any]:
    state = m.get("state") or ("not loadable" if "error" in m else "")
    reason = m.get("reason") or m.get("error")
    if reason:
        state = f"{state}: {reason}" if state else reason
    return {
        "model": ("* " if m.get("loaded") else "  ") + str(m.get("model")),
        "size": _size(m.get("size_bytes")),
        "arch": m.get("architecture") or "-",
        "quant": m.get("quantization") or "-",
        "trained_ctx": m.get("context_length") or "-",
        "template": "yes" if m.get("chat_template") else "no",
        "state": state,
    }


@click.group()
@click.option("--url", envvar="GATEWAY_URL", default=DEFAULT_URL, show_default=True,
              help="The gateway (env GATEWAY_URL).")
@click.option("--key", envvar="GATEWAY_ADMIN_KEY", default=None,
              help="An admin key (env GATEWAY_ADMIN_KEY); not needed when the gateway's auth is off.")
@click.pass_context
def cli(ctx: click.Context, url: str, key: str | None) -> None:
    """The local models of a running GLM Gateway (LOCAL_MODELS_DIR / LOCAL_MODEL_PATH).

    \b
    Example:
        python local_models.py list
        python local_models.py switch qwen2.5-7b-q4_k_m.gguf --ctx-size 8192
        python local_models.py warm prefix.json
    """
    ctx.obj = Gateway(url, key)


@cli.command("list")
@click.pass_obj
def list_models(gw: Gateway) -> None:
    """The GGUF files found (* marks the loaded one), what each is, and the server's state."""
    data = gw.call("GET", "/admin/local/models")
    rows = [_row(m) for m in data.get("data", [])]
    click.echo(_table(rows) if rows else "no GGUF files in the gateway's models folder")
    if data.get("switching_to"):
        click.echo(f"\nswitching to {data['switching_to']}")
    last = data.get("last_switch")
    if last and last.get("state") == "failed":
        click.echo(f"\nthe last switch, to {last.get('model')}, failed: {last.get('reason')}")


@cli.command()
@click.argument("model")
@click.option("--ctx-size", type=click.IntRange(0), default=None,
              help="Context size to load it with (default LOCAL_CTX_SIZE; 0: its trained context).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the model serves.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait.")
@click.pass_obj
def switch(gw: Gateway, model: str, ctx_size: int | None, wait: bool, timeout: float) -> None:
    """Load MODEL (a file name from `list`); requests keep going to the loaded model until it is ready.

    Example: python local_models.py switch b.gguf --ctx-size 8192
    """
    body: dict[str, Any] = {"model": model}
    if ctx_size is not None:
        body["ctx_size"] = ctx_size
    started = gw.call("POST", "/admin/local/model", body)
    name = started["model"]
    if not wait:
        click.echo(f"switching to {name}")
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = gw.call("GET", "/admin/local/models")
        last = data.get("last_switch") or {}
        if last.get("model") == name and last.get("state") == "ready":
            click.echo(f"{name} is loaded and serving")
            return
        if last.get("model") == name and last.get("state") == "failed":
            raise click.ClickException(f"{name} did not load: {last.get('reason')}")
        time.sleep(POLL)
    raise click.ClickException(f"{name} was not ready within {timeout:g}s; `list` shows its state")


@cli.command()
@click.argument("prefix", type=click.File("r"))
@click.pass_obj
def warm(gw: Gateway, prefix: Any) -> None:
    """Read a prompt prefix into the server's cache: PREFIX is a JSON file (or - for stdin) with
    "messages" (e.g. the system prompt) and optionally "tools", as in a chat request.

    Example: python local_models.py warm agent-prefix.json
    """
    try:
        body = json.load(prefix)
    except ValueError as e:
        raise click.ClickException(f"{prefix.name} is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise click.ClickException(f"{prefix.name} must hold a JSON object with \"messages\" (and \"tools\")")
    done = gw.call("POST", "/admin/local/warm", {k: body[k] for k in ("messages", "tools") if k in body},
                   timeout=600.0)
    kept = "saved for restarts" if done.get("saved") else "not saved (LOCAL_SLOT_DIR unset)"
    click.echo(f"warmed {done.get('model')}: {done.get('prompt_tokens')} tokens in {done.get('prompt_ms')} ms, "
               f"{done.get('slots_warmed')} slot(s), {kept}")


def main() -> None:
    load_dotenv(os.environ.get("ENV_FILE", ".env"), override=False)
    cli(prog_name="local_models.py")


if __name__ == "__main__":
    main()
