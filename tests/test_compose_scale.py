"""docker-compose.yml's ``scale`` profile, parsed (Docker cannot run on the test machines): two
or more gateway replicas sharing Redis and PostgreSQL, behind nginx, one address for clients."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()


def scale_services() -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if "scale" in (s.get("profiles") or [])}


def replicas() -> dict[str, dict]:
    return {name: s for name, s in scale_services().items() if s.get("command") is None
            and s.get("build") == "."}


def test_the_single_gateway_is_unchanged_and_out_of_the_profile():
    single = SERVICES["gateway"]
    assert "profiles" not in single and single["ports"] == ["18080:18080"]
    assert single["environment"]["REDIS_URL"] == "${REDIS_URL:-}"  # passed through, empty by default


def test_scale_has_two_or_more_replicas_sharing_redis_and_postgres():
    reps = replicas()
    assert len(reps) >= 2, sorted(scale_services())
    for name, s in reps.items():
        env = s["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:"), name
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"], name
        assert env["HOST"] == "0.0.0.0" and str(env["PORT"]) == "18080"
        assert env["CEREBRAS_API_KEYS"] == "${CEREBRAS_API_KEYS:-}"  # the same settings as the single one
        assert not s.get("ports"), f"{name} must be reached through the load balancer only"
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "redis" in s["depends_on"]
    assert "redis" in scale_services() and "postgres" in scale_services()
    assert SERVICES["postgres"]["healthcheck"]["test"]


def test_nginx_is_the_one_address_and_knows_every_replica():
    lb = SERVICES["lb"]
    assert lb["image"].startswith("nginx")
    assert len(lb["ports"]) == 1
    published, inner = lb["ports"][0].rsplit(":", 1)
    assert re.search(rf"listen {inner};", NGINX)
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    upstream = set(re.findall(r"server (\S+):18080", NGINX))
    assert upstream == set(replicas()), (upstream, sorted(replicas()))
    assert set(lb["depends_on"]) == set(replicas())


def test_nginx_is_streaming_friendly():
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_http_version 1.1;",
                      'proxy_set_header Connection "";'):
        assert directive in NGINX
    read = int(re.search(r"proxy_read_timeout (\d+)s;", NGINX).group(1))
    assert read >= 600  # as long as the longest upstream silence the gateway allows (LOCAL_READ_TIMEOUT)
    assert "non_idempotent" not in NGINX  # a POST already sent is never sent twice
