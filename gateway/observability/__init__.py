"""Observability: Prometheus metrics (``Metrics``: the registry, the per-request recorder and the
scrape-time collectors) and the dashboard's recent activity (``Activity``: a bounded ring of
10-second buckets and the last errors). The X-Gateway-Overhead-Ms header is set in
gateway/middleware.py, CORS in gateway/cors.py, the dashboard page is gateway/api/dashboard/."""
from .activity import Activity
from .metrics import Metrics

__all__ = ["Activity", "Metrics"]
