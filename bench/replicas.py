#!/usr/bin/env python3
"""Throughput through a load balancer: 2 gateway replicas against 1, and Redis on against off.

Starts a fake upstream (bench/fake_upstream.py), a real ``redis-server``, three gateways
(``proxy_server.py``, sharing one SQLite key database): A and B with ``REDIS_URL`` set, C without,
and one nginx whose configuration is made from ``deploy/nginx.conf`` (its ``least_conn``,
keepalive to the replicas, no buffering; only the addresses change, on free ports) with two
front ends: one to A alone, one to A and B. Then, for each target, in rounds (targets back to
back in each, medians over rounds: this machine's speed drifts):

- p50 latency at concurrency 1, requests/s at concurrency 10 and 50;
- how busy the machine's cores were, and CPU ms per request of the gateways, nginx and Redis.

Targets: the upstream direct (the ceiling), gateway C direct (Redis off), gateway A direct
(Redis on), nginx -> A, nginx -> A + B. The bench's client key has budgets (never refusing), so
every request's spend and hold go through Redis, as for a client with a budget.

    python bench/replicas.py            # 3 rounds (a few minutes on 2 cores)
    python bench/replicas.py --quick    # 1 short round (a smoke run)

Needs nginx (``apt-get install -y --no-install-recommends nginx-light``) and redis-server; exits 2
if either is missing. Writes JSON to bench/results/.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402
    ROOT,
    cpu_seconds,
    fmt,
    free_port,
    load,
    machine_busy,
    make_client_key,
    stop_all,
    wait_http,
)

sys.path.insert(0, str(ROOT))
from tests.redis_server import REDIS_SERVER, RedisProcess  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_conf(base: str, prefix: Path, fronts: dict[int, list[int]]) -> str:
    """deploy/nginx.conf with its addresses replaced: one ``upstream`` and ``server`` per front
    end (listen port -> the gateway ports behind it), every other setting as it is there; plus
    the paths a non-installed nginx needs (pid, logs, temporary files, under ``prefix``)."""
    upstream = re.search(r"    upstream gateways \{\n.*?\n    \}\n", base, re.S)
    server = re.search(r"    server \{\n.*\n    \}\n", base, re.S)
    entry = re.search(r"        server gateway-a:18080 (.*);\n", base)
    if (upstream is None or server is None or entry is None or "listen 8080;" not in server.group(0)
            or "        keepalive" not in upstream.group(0)):
        raise SystemExit("deploy/nginx.conf changed shape: bench/replicas.py cannot rewrite its addresses")
    blocks = []
    for listen, ports in fronts.items():
        name = f"gateways_{listen}"
        servers = "".join(f"        server 127.0.0.1:{p} {entry.group(1)};\n" for p in ports)
        up = re.sub(r"        server gateway-\w:18080 .*;\n", "", upstream.group(0))
        up = up.replace("upstream gateways {", f"upstream {name} {{")
        up = up.replace("        keepalive", servers + "        keepalive")
        front = server.group(0).replace("listen 8080;", f"listen 127.0.0.1:{listen};").replace(
            "proxy_pass http://gateways;", f"proxy_pass http://{name};")
        blocks.append(up + "\n" + front)
    http = base[:upstream.start()] + "\n".join(blocks) + base[server.end():]
    temp = "".join(f"    {kind}_temp_path {prefix}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    http = http.replace("    access_log off;\n", f"    access_log off;\n{temp}", 1)
    return f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n" + http


def admin_key(db: Path) -> str:
    """An admin key, to read each replica's /_status (shared state connected, never degraded)."""
    from gateway.keystore import ADMIN, KeyStore

    async def go() -> str:
        store = await KeyStore.open(db)
        try:
            return (await store.add("bench-admin", role=ADMIN))[1]
        finally:
            await store.close()

    return asyncio.run(go())


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def measure(url: str, key: str, pids: list[int], counts: dict[int, int]) -> dict:
    """p50 at concurrency 1 and requests/s at 10 and 50, each with cores busy and the CPU ms per
    request of ``pids`` (gateways, nginx and its workers, redis-server)."""
    out: dict = {}
    for c, n in counts.items():
        cpu0, (busy0, total0) = sum(cpu_seconds(p) for p in pids), machine_busy()
        r = load(url, key, c, n, False)
        busy1, total1 = machine_busy()
        ok = max(1, r["ok"])
        out[c] = {"rps": r["rps"], "p50_ms": r["p50_ms"], "errors": sum(r["errors"].values()),
                  "busy": (busy1 - busy0) / max(1e-9, total1 - total0),
                  "cpu_ms": (sum(cpu_seconds(p) for p in pids) - cpu0) / ok * 1000}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    for tool, path in (("nginx", NGINX), ("redis-server", REDIS_SERVER)):
        if not Path(path).exists():
            print(f"{tool} is not installed ({path}): apt-get install -y --no-install-recommends "
                  f"{'nginx-light' if tool == 'nginx' else 'redis-server'}", file=sys.stderr)
            return 2
    rounds = 1 if a.quick else a.rounds
    counts = {1: 200, 10: 1000, 50: 1000} if a.quick else {1: 1500, 10: 6000, 50: 6000}

    tmp = Path(tempfile.mkdtemp(prefix="glm-replicas-"))
    procs: list[subprocess.Popen] = []
    redis = RedisProcess(tmp)
    try:
        up_port = free_port()
        upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(up_port)])
        procs.append(upstream)
        wait_http(f"http://127.0.0.1:{up_port}/", upstream)
        redis.start()
        db = tmp / "keys.db"
        key, admin = make_client_key(db), admin_key(db)
        base_env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "CEREBRAS_API_KEYS": json.dumps({"a": "csk-bench-a", "b": "csk-bench-b", "c": "csk-bench-c"}),
            "CEREBRAS_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
            "ENABLE_INCOMING_AUTH": "true",
            "INCOMING_KEY_DB": str(db),
            "LOG_LEVEL": "INFO",
            "ENV_FILE": str(tmp / "none.env"),
        }
        ports: dict[str, int] = {}
        gateways: dict[str, subprocess.Popen] = {}
        for name, shared in (("A", True), ("B", True), ("C", False)):
            ports[name] = free_port()
            env = {**base_env, "PORT": str(ports[name]), "LOG_DIR": str(tmp / f"logs-{name}")}
            if shared:
                env["REDIS_URL"] = redis.url
            gateways[name] = subprocess.Popen([sys.executable, str(ROOT / "proxy_server.py")], env=env, cwd=tmp,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(gateways[name])
        for name, proc in gateways.items():
            wait_http(f"http://127.0.0.1:{ports[name]}/health", proc)

        one, two = free_port(), free_port()
        prefix = tmp / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf((ROOT / "deploy" / "nginx.conf").read_text(), prefix,
                                   {one: [ports["A"]], two: [ports["A"], ports["B"]]}))
        nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"])
        procs.append(nginx)
        wait_http(f"http://127.0.0.1:{two}/health", nginx)
        balancer = [nginx.pid, *children(nginx.pid)]

        path = "/v1/chat/completions"
        a_pid, b_pid, r_pid = gateways["A"].pid, gateways["B"].pid, redis.proc.pid if redis.proc else 0
        targets = {  # name -> (url, key, the processes whose CPU counts)
            "upstream direct (ceiling)": (f"http://127.0.0.1:{up_port}{path}", "", []),
            "1 gateway direct, Redis off": (f"http://127.0.0.1:{ports['C']}{path}", key, [gateways["C"].pid]),
            "1 gateway direct, Redis on": (f"http://127.0.0.1:{ports['A']}{path}", key, [a_pid, r_pid]),
            "nginx -> 1 replica": (f"http://127.0.0.1:{one}{path}", key, [a_pid, r_pid, *balancer]),
            "nginx -> 2 replicas": (f"http://127.0.0.1:{two}{path}", key, [a_pid, b_pid, r_pid, *balancer]),
        }
        for url, k, _ in targets.values():
            load(url, k, 10, 300, False)  # warm up: pools, caches, nginx's keepalive connections
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        for i in range(rounds):
            for name, (url, k, pids) in targets.items():
                runs[name].append(measure(url, k, pids, counts))
                print(f"  round {i + 1}/{rounds} {name}: " + ", ".join(
                    f"c={c} {m['rps']} rps p50 {fmt(m['p50_ms'])} ms" for c, m in runs[name][-1].items()),
                    file=sys.stderr)
        states = []  # A's and B's: connected to Redis all along (times_degraded 0)
        for n in ("A", "B"):
            ask = urllib.request.Request(f"http://127.0.0.1:{ports[n]}/_status",
                                         headers={"Authorization": f"Bearer {admin}"})
            with urllib.request.urlopen(ask, timeout=5) as resp:
                states.append(json.load(resp)["shared_state"])
    finally:
        stop_all(list(reversed(procs)))
        redis.stop()

    def med(name: str, c: int, field: str) -> float:
        return statistics.median(r[c][field] for r in runs[name])

    result = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "rounds": rounds, "requests": counts, "runs": runs, "shared_state": states,
              "medians": {name: {str(c): {f: round(med(name, c, f), 4) for f in ("rps", "p50_ms", "busy", "cpu_ms")}
                                 for c in counts} for name in runs}}
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"replicas-{'quick-' if a.quick else ''}{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2))

    head = (f"{'target':28s} | {'c=1 p50 ms':>10} | {'c=10 rps':>8} {'busy':>5} {'cpu ms/req':>10} | "
            f"{'c=50 rps':>8} {'busy':>5} {'cpu ms/req':>10}")
    print(f"medians of {rounds} round(s), {os.cpu_count()} cores; busy: the whole machine's cores; "
          f"cpu ms/req: gateways + nginx + redis-server")
    print(head)
    print("-" * len(head))
    for name in runs:
        print(f"{name:28s} | {fmt(med(name, 1, 'p50_ms'), 3):>10} | {med(name, 10, 'rps'):8.0f} "
              f"{med(name, 10, 'busy') * 100:4.0f}% {med(name, 10, 'cpu_ms'):10.3f} | {med(name, 50, 'rps'):8.0f} "
              f"{med(name, 50, 'busy') * 100:4.0f}% {med(name, 50, 'cpu_ms'):10.3f}")
    errors = sum(m["errors"] for rs in runs.values() for r in rs for m in r.values())
    print("shared state: " + "; ".join(f"{n}: connected {st['connected']}, times degraded {st['times_degraded']}"
                                       for n, st in zip("AB", states, strict=True)))
    print(f"JSON: {out}" + (f"; {errors} requests failed" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
