#!/usr/bin/env python3
"""GLM Gateway entrypoint: settings from the environment (and .env) -> logging -> serve."""
from __future__ import annotations

import asyncio
import os
import sys

from dotenv import load_dotenv

from gateway.app import create_app
from gateway.config import ConfigError, Settings
from gateway.logs import configure


def raise_open_file_limit(wanted: int = 65536) -> int | None:
    """Every stream holds two sockets (its client's and its upstream's), so 500 of them meet the
    usual soft limit of 1,024 open files. Lift the soft limit toward the hard one; returns the new
    soft limit, or None when nothing changed (or the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return target


def main() -> int:
    load_dotenv(os.environ.get("ENV_FILE", ".env"), override=False)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as e:
        print(f"glm-gateway: configuration error: {e}", file=sys.stderr)
        return 2
    try:
        writer = configure(
            settings.log_level,
            settings.log_dir,
            settings.secrets(),
            max_bytes=settings.log_file_max_bytes,
            backups=settings.log_file_backups,
        )
    except OSError as e:
        print(f"glm-gateway: configuration error: LOG_DIR: cannot write logs to {settings.log_dir}: {e}",
              file=sys.stderr)
        return 2
    try:
        import structlog

        from gateway import server

        try:  # a faster event loop where available (Linux, macOS)
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass

        open_files = raise_open_file_limit()
        structlog.get_logger("gateway").info(
            "starting",
            open_files_limit_raised_to=open_files,
            host=settings.host,
            port=settings.port,
            providers=[f"{p.name}({len(p.keys)} keys)" for p in settings.providers],
            auth=settings.enable_incoming_auth,
        )
        server.run(create_app(settings), settings)  # until SIGINT/SIGTERM
    except ConfigError as e:  # a resource named by the configuration could not be opened
        print(f"glm-gateway: configuration error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the port is taken
        print(f"glm-gateway: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 2
    finally:
        writer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
