#!/usr/bin/env python3
"""What each feature costs a request, in CPU instructions: deterministic, whatever else the
machine is doing.

Timings on a shared 2-core machine move by 10% from run to run; instruction counts from
valgrind's callgrind move by 2-3%. For each configuration this runs the gateway in-process (the
real app from ``gateway.app.create_app``, on a real port, against ``bench/fake_upstream.py``),
under callgrind, twice: warm-up plus N1 json requests at concurrency 10, then warm-up plus N2.
The difference over N2 - N1 is the instructions one request costs the gateway's process (every
thread: the event loop, the log writer, SQLite's). Configurations: the gateway as configured by
default (every default feature on, budgets on the bench key), the floor (``bench/bare_relay.py``,
in-process the same way), every optional part off, and each part off alone:

- ``metrics``, ``ledger``, ``activity``, ``budgets``: that recorder left out of ``app[RECORDERS]``
  (``budgets``: the spend record; the admission check stays);
- ``access``: no access log line; ``validate``: no field validation; ``repair``: no transcript
  check; ``edge``: aiohttp's plain server instead of ``gateway/server.py``'s (no head/body
  deadlines, no connection cap).

Kernel time is not counted (callgrind sees user space only), nor the load generator's and the
upstream's work.

    python bench/features.py                  # every configuration (about 2 minutes each)
    python bench/features.py gateway floor    # some
    python bench/features.py --n1 300 --n2 1300 access
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTS = ("metrics", "ledger", "activity", "budgets", "validate", "access", "edge", "repair")
CONFIGS = {"gateway": (), "floor": ("floor",), "all parts off": PARTS, **{f"{p} off": (p,) for p in PARTS}}
RECORDER_NAMES = {"metrics": "Metrics.record", "ledger": "Ledger.record", "activity": "Activity.record",
                  "budgets": "SpendTracker.record"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(off: set[str], requests: int) -> None:
    """The measured process: the app in-process, a load generator in a child process."""
    from bench.run import make_client_key, wait_http

    tmp = Path(tempfile.mkdtemp(prefix="glm-features-"))
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(up_port)])
    try:
        wait_http(f"http://127.0.0.1:{up_port}/", upstream)
        key = make_client_key(tmp / "keys.db")
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_serve(off, requests, tmp, up_port, port, key))
    finally:
        upstream.terminate()
        upstream.wait()
        shutil.rmtree(tmp, ignore_errors=True)


async def _serve(off: set[str], requests: int, tmp: Path, up_port: int, port: int, key: str) -> None:
    from aiohttp import web

    from bench.run import gateway_env
    from gateway.app import create_app
    from gateway.config import Settings
    from gateway.logs import configure
    from gateway.state import RECORDERS

    settings = Settings.from_env(gateway_env(up_port, port, tmp / "keys.db", tmp / "logs"))
    writer = configure(settings.log_level, settings.log_dir, settings.secrets(), stdout=False)
    if "floor" in off:
        import bench.bare_relay as bare

        app = bare.make_app(f"http://127.0.0.1:{up_port}/v1/chat/completions")
    else:
        app = create_app(settings)
        recorders = app[RECORDERS]
        gone = {RECORDER_NAMES[p] for p in off if p in RECORDER_NAMES}
        recorders[:] = [r for r in recorders if getattr(r, "__qualname__", "") not in gone]
        # "what if this part were off": the parts replaced where the request path calls them
        if "validate" in off:
            import gateway.chat

            gateway.chat.check_request = lambda payload: False  # type: ignore[assignment]
        if "access" in off:
            import gateway.middleware

            gateway.middleware.access = lambda *a, **k: None  # type: ignore[assignment]
        if "repair" in off:
            import gateway.handlers

            gateway.handlers.repair_transcript = lambda *a: None  # type: ignore[assignment]
    if "edge" in off or "floor" in off:
        runner: web.BaseRunner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    else:
        from gateway import server

        runner = await server.start(app, settings, host="127.0.0.1", port=port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    for n in (500, requests):  # warm-up (pools, caches, first arenas), then the measured part
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", url, "--key", key, "--concurrency",
            "10", "--requests", str(n), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        result = json.loads(out.decode().strip().splitlines()[-1])
        if result["ok"] != n:
            raise SystemExit(f"{n - result['ok']} requests failed: {result.get('errors')}")
    await runner.cleanup()
    writer.stop()


def instructions(off: tuple[str, ...], requests: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/out", sys.executable, __file__,
               "--serve", ",".join(off) or "-", "--requests", str(requests)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=d)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the measured run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*", help=f"configurations to measure (default: all): {', '.join(CONFIGS)}")
    ap.add_argument("--n1", type=int, default=300)
    ap.add_argument("--n2", type=int, default=2300)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        serve(set(a.serve.split(",")) - {"-"}, a.requests)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    names = a.configs or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    results: dict[str, int] = {}
    for name in names:
        off = CONFIGS[name]
        results[name] = (instructions(off, a.n2) - instructions(off, a.n1)) // (a.n2 - a.n1)
        line = f"{name:<16} {results[name]:>10,} instructions / request"
        if "gateway" in results and name != "gateway":
            line += f"   {results[name] - results['gateway']:+,} against the gateway"
        print(line, flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"features-{os.getpid()}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
