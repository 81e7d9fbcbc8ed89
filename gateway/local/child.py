"""The child process the supervisor runs: llama.cpp's own HTTP server, from the xllamacpp wheel.

    python -m gateway.local.child -m model.gguf --port 8123 -c 4096 -np 1 -t 0 -ngl 0 \\
        --alias model.gguf [--slot-save-path DIR] [LOCAL_SERVER_ARGS...]

The API key comes in the environment (``LLAMA_API_KEY``, as llama-server reads it), not on the
command line other users can see; so does the gateway's pid (``GATEWAY_PID``). Exit codes: 0
stopped (SIGTERM/SIGINT), 1 the model did not load (llama.cpp's reason is on stderr), 2 bad
arguments (the message on stderr names them). The process also exits when the gateway that
started it is gone, so a gateway killed with SIGKILL leaves no server behind.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from .flags import Setting, parse

PARENT_POLL = 1.0  # seconds between checks that the gateway is still there


def apply(params: Any, settings: list[Setting], xlc: Any) -> None:
    """Set each flag's field on an xllamacpp ``CommonParams``."""
    for s in settings:
        *path, last = s.field.split(".")
        target = params
        for part in path:
            target = getattr(target, part)
        value: Any = s.value
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            value = getattr(getattr(xlc, value[0]), value[1])
        elif isinstance(value, tuple):  # tensor split: the field is a fixed-size list
            current = list(getattr(target, last))
            value = list(value) + [0.0] * max(0, len(current) - len(value))
        setattr(target, last, value)


def _watch_parent(parent: int, stop: threading.Event) -> None:
    while not stop.wait(PARENT_POLL):
        if os.getppid() != parent:
            os._exit(0)  # the gateway is gone: no one will send requests or stop this server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.local.child")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-c", "--ctx-size", type=int, default=4096)
    ap.add_argument("-np", "--parallel", type=int, default=1)
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=0)
    ap.add_argument("-a", "--alias", default="")
    ap.add_argument("--slot-save-path", default="")
    known, extra = ap.parse_known_args(argv)
    try:
        settings = parse(extra)
    except ValueError as e:
        print(f"LOCAL_SERVER_ARGS: {e}", file=sys.stderr, flush=True)
        return 2

    import xllamacpp as xlc  # late: the argument errors above come at once

    p = xlc.CommonParams()
    p.model.path = known.model
    p.hostnames = [known.host]
    p.port = known.port
    p.n_ctx = known.ctx_size
    p.n_parallel = known.parallel
    if known.threads > 0:
        p.cpuparams.n_threads = known.threads
        p.cpuparams_batch.n_threads = known.threads
    p.n_gpu_layers = known.n_gpu_layers
    p.endpoint_slots = True
    if known.alias:
        p.model_alias = {known.alias}
    if known.slot_save_path:
        p.slot_save_path = os.path.join(known.slot_save_path, "")  # llama.cpp appends the file name as is
    key = os.environ.get("LLAMA_API_KEY", "")
    if key:
        p.api_keys = [key]
    apply(p, settings, xlc)

    stop = threading.Event()
    # the gateway says who it is: a gateway that died before this line ran is not mistaken for
    # whatever process adopted this one
    parent = int(os.environ.get("GATEWAY_PID") or os.getppid())
    if os.getppid() != parent:
        return 0
    threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = xlc.Server(p)  # loads the model, then listens; returns once it serves
    except RuntimeError as e:
        print(f"llama.cpp: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"LISTENING {server.listening_address}", flush=True)
    while not stop.wait(0.5):
        pass
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
