"""The command line both bench relays share: ``--port`` and ``--upstream``, and uvloop if present."""
from __future__ import annotations

import argparse


def relay_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return a
