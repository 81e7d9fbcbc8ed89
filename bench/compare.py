#!/usr/bin/env python3
"""Two checkouts side by side in one run: each one's floor (bench/bare_relay.py) and gateway
(client auth off) on one fake upstream, json at concurrency 10 and 1, rounds of every target back
to back; prints the median ratios to direct, p50 and each relay's CPU per request. What a change
to the hot path costs, measured with the machine's drift shared by both sides:

    python bench/compare.py ../main-checkout            # this checkout against another
    python bench/compare.py ../main-checkout --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import ROOT, cpu_seconds, free_port, load, wait_http  # (bench/, beside this file)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("other", type=Path, help="the other checkout (its bench/bare_relay.py and proxy_server.py)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sides = {"other": a.other.resolve(), "this": ROOT}
    tmp = Path(tempfile.mkdtemp(prefix="glm-compare-"))
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], url: str, env: dict[str, str] | None = None) -> int:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        wait_http(url, proc)
        return proc.pid

    try:
        up = free_port()
        start([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(up)], f"http://127.0.0.1:{up}/")
        direct = f"http://127.0.0.1:{up}/v1/chat/completions"
        targets: dict[str, tuple[str, int | None]] = {"direct": (direct, None)}
        for side, root in sides.items():
            port = free_port()
            pid = start([sys.executable, str(root / "bench" / "bare_relay.py"), "--port", str(port), "--upstream",
                         direct], f"http://127.0.0.1:{port}/")
            targets[f"{side} floor"] = (f"http://127.0.0.1:{port}/v1/chat/completions", pid)
        for side, root in sides.items():
            port = free_port()
            env = {**os.environ, "PORT": str(port), "ENABLE_INCOMING_AUTH": "false", "LOG_DIR": str(tmp / side),
                   "CEREBRAS_API_KEYS": json.dumps({"a": "csk-bench-a", "b": "csk-bench-b"}),
                   "CEREBRAS_BASE_URL": f"http://127.0.0.1:{up}/v1", "ENV_FILE": str(tmp / "none.env"),
                   "INCOMING_KEY_DB": str(tmp / f"{side}.db")}
            pid = start([sys.executable, str(root / "proxy_server.py")], f"http://127.0.0.1:{port}/health", env)
            targets[f"{side} gateway"] = (f"http://127.0.0.1:{port}/v1/chat/completions", pid)
        for concurrency, requests in ((10, 10000), (1, 3000)):
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
            for _ in range(a.rounds):
                for name, (url, pid) in targets.items():
                    cpu0 = cpu_seconds(pid) if pid else 0.0
                    r = load(url, "", concurrency, requests, False)
                    cpu_ms = (cpu_seconds(pid) - cpu0) / max(1, r["ok"]) * 1000 if pid else 0.0
                    runs[name].append((r["rps"], r["p50_ms"], cpu_ms))
            base = statistics.median(x[0] for x in runs["direct"])
            for name, xs in runs.items():
                rps, p50, cpu = (statistics.median(x[i] for x in xs) for i in range(3))
                print(f"c={concurrency:<3} {name:14} {rps:9.0f} rps  ratio {rps / base:5.3f}  p50 {p50:6.3f} ms  "
                      f"relay CPU {cpu:6.3f} ms/request", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
