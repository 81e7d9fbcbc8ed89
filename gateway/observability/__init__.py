"""Observability: Prometheus metrics (``Metrics``: the registry, the per-request recorder and the
scrape-time collectors). The X-Gateway-Overhead-Ms header is set in gateway/middleware.py, CORS in
gateway/cors.py."""
from .metrics import Metrics

__all__ = ["Metrics"]
