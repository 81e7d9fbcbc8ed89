#!/usr/bin/env python3
"""Benchmark the gateway side by side with its upstream, in one run on one machine.

Starts four kinds of process: a fake upstream, a bare relay (the floor), the gateway
(``proxy_server.py``, client auth on, three Cerebras keys, a fallback configured, JSON logs to a
file), and a load generator per
scenario. Each scenario runs directly against the upstream and through the gateway, back to back,
so the figures that matter are ratios and differences from the same run:

- requests/s and p50/p99 latency, direct and through; added latency per percentile;
- the gateway's CPU seconds per 1,000 requests and its peak RSS;
- the floor: the same scenario through a bare relay (bench/bare_relay.py: aiohttp's server and the
  gateway's upstream session; no auth, logs or routing), which tells the framework's cost from the
  gateway's own;
- for streams, each chunk's delivery delay (upstream send stamp -> client arrival), direct and through.

Also: 500 concurrent streams (RSS before/after), a soak (``--soak N``: RSS at start and end), and
the time to estimate tokens of a 500 KB request. Prints a table; writes JSON to bench/results/.

    python bench/run.py                 # the full run (a few minutes on 2 cores)
    python bench/run.py --quick         # a smoke run (seconds), as CI does
    python bench/run.py --soak 100000   # add a 100k-request soak
    python bench/run.py --ceiling 9     # json at concurrency 10 only: what bounds the ratio
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Terminate the processes, then wait for each (killed after 10 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / TICKS, sum(fields) / TICKS


def load(url: str, key: str, concurrency: int, requests: int, stream: bool, warmup: int = 2) -> dict:
    """One load generator run; the result also carries the load generator's own CPU seconds."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", url, "--concurrency", str(concurrency),
           "--requests", str(requests), "--warmup", str(warmup)]
    if key:
        cmd += ["--key", key]
    if stream:
        cmd.append("--stream")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.strip().splitlines()[-1])
    result["loadgen_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)
    return result


def settled_rows(db: Path, quiet: float = 3.0, timeout: float = 60.0) -> int:
    """Usage rows in the ledger once the count has not moved for ``quiet`` seconds (the writer
    flushes every USAGE_FLUSH_INTERVAL, 2 s by default)."""
    import sqlite3

    def count() -> int:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return int(con.execute("SELECT count(*) FROM usage").fetchone()[0])

    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def gateway_env(upstream_port: int, port: int, key_db: Path, log_dir: Path) -> dict[str, str]:
    """The bench's gateway configuration: client auth on, three Cerebras keys and a Synthetic
    fallback, all on the fake upstream, JSON logs to a file (bench/features.py measures the same)."""
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    return {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CEREBRAS_API_KEYS": json.dumps({"a": "csk-bench-a", "b": "csk-bench-b", "c": "csk-bench-c"}),
        "CEREBRAS_BASE_URL": upstream,
        "SYNTHETIC_API_KEY": "syn-bench",
        "SYNTHETIC_BASE_URL": upstream,
        "ENABLE_INCOMING_AUTH": "true",
        "INCOMING_KEY_DB": str(key_db),
        "LOG_DIR": str(log_dir),
        "LOG_LEVEL": "INFO",
    }


def make_client_key(db: Path) -> str:
    """The bench's client key, with budgets set high enough never to refuse: the budget check and
    spend tracking run on every request, as for a user who set them."""
    from gateway.keystore import KeyStore

    async def go() -> str:
        store = await KeyStore.open(db)
        try:
            _, plaintext = await store.add("bench")
            await store.set_limits("bench", {"daily_usd": 1e9, "monthly_usd": 1e9})
            return plaintext
        finally:
            await store.close()

    return asyncio.run(go())


def token_estimate_timing() -> dict:
    """Median time to parse, repair and estimate a 500 KB coding-agent request, in-process."""
    import orjson

    from gateway.chat import parse_chat_request
    from gateway.repair import repair_messages
    from gateway.tokens import encoder, estimate_prompt_tokens

    code = "def handler(request):\n    return {'status': 200, 'body': request.json()}\n"
    messages = [{"role": "system", "content": "You are a coding agent."}]
    i = 0
    while len(orjson.dumps({"messages": messages})) < 500_000:
        messages.append({"role": "user", "content": f"Step {i}: read the file and fix it.\n" + code * 3})
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": code})
        i += 1
    raw = orjson.dumps({"model": "zai-glm-4.7", "messages": messages})
    encoder()  # loaded once at gateway start, not per request

    def median_ms(fn, runs: int = 7) -> float:
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        return round(sorted(times)[runs // 2], 2)

    req = parse_chat_request(raw)
    return {
        "request_bytes": len(raw),
        "messages": len(messages),
        "estimated_tokens": estimate_prompt_tokens(req.payload),
        "parse_ms": median_ms(lambda: parse_chat_request(raw)),
        "repair_check_ms": median_ms(lambda: repair_messages(req.payload["messages"])),
        "estimate_ms": median_ms(lambda: estimate_prompt_tokens(req.payload)),
    }


def ceiling(rounds: int, targets: dict[str, tuple[str, str, int | None]], upstream_pid: int, out: str,
            requests: int = 10000) -> int:
    """json at concurrency 10, ``rounds`` times over, every target back to back; the ratio of each
    target's median requests/s to the direct median (medians: this machine's speed drifts).

    ``targets``: name -> (url, client key, relay pid or None for direct). Also reports, per target,
    the median CPU ms per request of the load generator (its whole process, start-up included),
    the upstream and the relay, and how busy
    the machine's cores were: where the time goes when the ratio is short. Returns 1 if any
    request failed.
    """
    import statistics

    runs: dict[str, list[dict]] = {name: [] for name in targets}
    failed = 0
    for url, k, _ in targets.values():
        load(url, k, 10, 500, False)  # warm up
    for _ in range(rounds):
        for name, (url, k, pid) in targets.items():
            up0, relay0, (busy0, total0) = cpu_seconds(upstream_pid), cpu_seconds(pid) if pid else 0.0, machine_busy()
            r = load(url, k, 10, requests, False)
            busy1, total1 = machine_busy()
            failed += sum(r["errors"].values())
            ok = max(1, r["ok"])
            runs[name].append({
                "rps": r["rps"],
                "loadgen_ms": r["loadgen_cpu_s"] / ok * 1000,
                "upstream_ms": (cpu_seconds(upstream_pid) - up0) / ok * 1000,
                "relay_ms": ((cpu_seconds(pid) - relay0) / ok * 1000) if pid else 0.0,
                "busy": (busy1 - busy0) / max(1e-9, total1 - total0),
            })
    base = statistics.median(x["rps"] for x in runs["direct"])
    result = {}
    print(f"{'target':42s} {'median rps':>10} {'ratio':>6} | CPU ms/request: {'loadgen':>7} {'upstream':>8} "
          f"{'relay':>6} | cores busy")
    for name, xs in runs.items():
        med = {f: statistics.median(x[f] for x in xs) for f in xs[0]}
        result[name] = {"runs": xs, **{f"median_{f}": round(v, 4) for f, v in med.items()},
                        "ratio": round(med["rps"] / base, 3)}
        print(f"{name:42s} {med['rps']:10.1f} {med['rps'] / base:6.3f} | {'':15} {med['loadgen_ms']:7.3f} "
              f"{med['upstream_ms']:8.3f} {med['relay_ms']:6.3f} | {med['busy'] * 100:5.1f}%")
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"ceiling-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    if failed:
        print(f"{failed} requests failed", file=sys.stderr)
    return 1 if failed else 0


def fmt(v, digits=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run with few requests")
    ap.add_argument("--soak", type=int, default=0, help="requests in the soak (0: no soak)")
    ap.add_argument("--log-requests", action="store_true", help="the gateway with LOG_REQUESTS=true")
    ap.add_argument("--ceiling", type=int, default=0, metavar="N",
                    help="only json at concurrency 10, N times over: direct, the floor and the gateway; "
                         "prints the median ratios, CPU per request of each process and how busy the "
                         "cores were (with --quick: 300 requests a run, a smoke test)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()

    n = {1: 2000, 10: 10000, 100: 10000}
    n_stream = {1: 300, 10: 1500, 100: 3000}
    streams_500 = 10000
    if a.quick:
        n = {1: 50, 10: 200, 100: 300}
        n_stream = {1: 10, 10: 50, 100: 200}
        streams_500 = 500

    tmp = Path(tempfile.mkdtemp(prefix="glm-bench-"))
    up_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(up_port)])
        procs.append(upstream)
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        wait_http(f"http://127.0.0.1:{up_port}/", upstream)
        floor_port = free_port()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_relay.py"), "--port", str(floor_port),
                                 "--upstream", direct])
        procs.append(bare)
        floor = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
        wait_http(f"http://127.0.0.1:{floor_port}/", bare)

        db = tmp / "keys.db"
        key = make_client_key(db)
        env = {**os.environ, **gateway_env(up_port, gw_port, db, tmp / "logs"), "ENV_FILE": str(tmp / "none.env")}
        if a.log_requests:
            env.update(LOG_REQUESTS="true", REQUEST_LOG_DIR=str(tmp / "requests"))
        gateway = subprocess.Popen([sys.executable, str(ROOT / "proxy_server.py")], env=env, cwd=tmp,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gateway)
        through = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        wait_http(f"http://127.0.0.1:{gw_port}/health", gateway)
        load(through, key, 10, 200, False)  # warm up the gateway's pools and caches
        if a.ceiling:
            return ceiling(a.ceiling, {
                "direct": (direct, "", None),
                "floor (aiohttp server + gateway session)": (floor, "", bare.pid),
                "gateway": (through, key, gateway.pid),
            }, upstream.pid, a.out, requests=300 if a.quick else 10000)

        rows = []
        for stream in (False, True):
            for c in (1, 10, 100):
                count = (n_stream if stream else n)[c]
                d = load(direct, "", c, count, stream)
                fcpu0 = cpu_seconds(bare.pid)
                f = load(floor, "", c, count, stream)
                floor_cpu = cpu_seconds(bare.pid) - fcpu0
                cpu0 = cpu_seconds(gateway.pid)
                t = load(through, key, c, count, stream)
                cpu = cpu_seconds(gateway.pid) - cpu0
                row = {
                    "mode": "stream" if stream else "json",
                    "concurrency": c,
                    "requests": count,
                    "direct": d,
                    "bare_relay": f,
                    "through": t,
                    "floor_added_p50_ms": round(f["p50_ms"] - d["p50_ms"], 3),
                    "floor_ratio": round(f["rps"] / d["rps"], 3) if d["rps"] else None,
                    "floor_cpu_s_per_1k": round(floor_cpu / max(1, f["ok"]) * 1000, 3),
                    "added_p50_ms": round(t["p50_ms"] - d["p50_ms"], 3),
                    "added_p99_ms": round(t["p99_ms"] - d["p99_ms"], 3),
                    "throughput_ratio": round(t["rps"] / d["rps"], 3) if d["rps"] else None,
                    "gateway_cpu_s_per_1k": round(cpu / max(1, t["ok"]) * 1000, 3),
                    "gateway_rss_mb": rss_mb(gateway.pid),
                }
                if stream:
                    row["added_chunk_p50_ms"] = round(t["chunk_delay_p50_ms"] - d["chunk_delay_p50_ms"], 3)
                    row["added_chunk_p99_ms"] = round(t["chunk_delay_p99_ms"] - d["chunk_delay_p99_ms"], 3)
                rows.append(row)
                print(f"  {row['mode']:6} c={c:<3} direct {d['rps']:>8} rps p50 {fmt(d['p50_ms'])} ms | "
                      f"through {t['rps']:>8} rps p50 {fmt(t['p50_ms'])} ms errors={t['errors'] or 0}",
                      file=sys.stderr)

        # rounds of streams at concurrency 500, RSS after each: the first rounds grow RSS once
        # (1,000 connections, buffers, the allocator's arenas); flat memory means the later ones
        # add nothing
        rss_before = rss_mb(gateway.pid)
        per_round = 500 if a.quick else 1000
        ok, errors, rss_rounds, p99 = 0, {}, [], None
        for _ in range(max(1, streams_500 // per_round)):
            r = load(through, key, 500, per_round, True)
            ok += r["ok"]
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
            rss_rounds.append(rss_mb(gateway.pid))
            p99 = r["p99_ms"]
        streams = {"concurrency": 500, "requests": max(1, streams_500 // per_round) * per_round, "ok": ok,
                   "errors": errors, "rss_before_mb": rss_before, "rss_after_each_round_mb": rss_rounds,
                   "rss_after_mb": rss_rounds[-1], "p99_ms": p99}

        soak = None
        if a.soak:
            rows0 = settled_rows(db)
            rss_start = rss_mb(gateway.pid)
            cpu0 = cpu_seconds(gateway.pid)
            s = load(through, key, 10, a.soak, False, warmup=0)  # every request it sends is counted
            soak = {"requests": a.soak, "ok": s["ok"], "errors": s["errors"], "rps": s["rps"],
                    "rss_start_mb": rss_start, "rss_end_mb": rss_mb(gateway.pid),
                    "cpu_s_per_1k": round((cpu_seconds(gateway.pid) - cpu0) / max(1, s["ok"]) * 1000, 3),
                    "ledger_rows": settled_rows(db) - rows0}

        result = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "quick": a.quick,
            "scenarios": rows,
            "streams_500": streams,
            "soak": soak,
            "gateway_peak_rss_mb": rss_mb(gateway.pid, "VmHWM"),
            "token_estimate_500kb": token_estimate_timing(),
        }
    finally:
        stop_all(procs)

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"bench-{'quick-' if a.quick else ''}{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2))

    head = (f"{'mode':6} {'conc':>4} | {'direct rps':>10} {'p50':>6} {'p99':>6} | {'through rps':>11} {'p50':>6} "
            f"{'p99':>6} | {'+p50':>6} {'+p99':>6} {'ratio':>5} | {'cpu s/1k':>8} {'+chunk p50/p99':>15} | "
            f"{'floor +p50':>10} {'ratio':>5} {'cpu s/1k':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        d, t = r["direct"], r["through"]
        chunk = (f"{fmt(r.get('added_chunk_p50_ms'), 3)}/{fmt(r.get('added_chunk_p99_ms'), 3)}"
                 if r["mode"] == "stream" else "")
        print(f"{r['mode']:6} {r['concurrency']:>4} | {d['rps']:>10} {fmt(d['p50_ms']):>6} {fmt(d['p99_ms']):>6} | "
              f"{t['rps']:>11} {fmt(t['p50_ms']):>6} {fmt(t['p99_ms']):>6} | {fmt(r['added_p50_ms'], 3):>6} "
              f"{fmt(r['added_p99_ms'], 3):>6} {fmt(r['throughput_ratio']):>5} | "
              f"{fmt(r['gateway_cpu_s_per_1k'], 3):>8} "
              f"{chunk:>15} | {fmt(r['floor_added_p50_ms'], 3):>10} {fmt(r['floor_ratio']):>5} "
              f"{fmt(r['floor_cpu_s_per_1k'], 3):>8}")
    s = result["streams_500"]
    print(f"\n500 concurrent streams: {s['ok']}/{s['requests']} ok, errors {s['errors'] or 0}, "
          f"gateway RSS {s['rss_before_mb']} MB before, then after each round of "
          f"{s['requests'] // len(s['rss_after_each_round_mb'])}: {s['rss_after_each_round_mb']} MB")
    if soak:
        print(f"soak: {soak['ok']}/{soak['requests']} ok at {soak['rps']} rps, RSS {soak['rss_start_mb']} -> "
              f"{soak['rss_end_mb']} MB, {soak['cpu_s_per_1k']} CPU s/1k, {soak['ledger_rows']} ledger rows")
    te = result["token_estimate_500kb"]
    print(f"500 KB request ({te['messages']} messages, ~{te['estimated_tokens']} tokens): parse {te['parse_ms']} ms, "
          f"repair check {te['repair_check_ms']} ms, token estimate {te['estimate_ms']} ms")
    print(f"gateway peak RSS {result['gateway_peak_rss_mb']} MB; JSON: {out}")
    failed = [r for r in rows if r["through"]["errors"] or r["direct"]["errors"]]
    lost = bool(soak) and soak["ledger_rows"] != soak["requests"]  # every request leaves one row
    if lost:
        print(f"the soak left {soak['ledger_rows']} ledger rows for {soak['requests']} requests", file=sys.stderr)
    return 1 if failed or s["errors"] or lost else 0


if __name__ == "__main__":
    sys.exit(main())
