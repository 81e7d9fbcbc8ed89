"""manage_keys.py stats and usage over a real ledger file, through click's CliRunner."""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from gateway.usage.stats import day_start, month_start
from manage_keys import cli
from tests.usage_db import insert

DAY = 86400


def run(db, *args):
    return CliRunner().invoke(cli, ["--db", str(db), *args])


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "keys.db"
    for name in ("alice", "bob"):
        assert run(path, "add", name).exit_code == 0
    return path


def table(output: str) -> list[list[str]]:
    """The rows of the printed table (split on runs of 2+ spaces), header first."""
    import re

    lines = [line for line in output.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith(("NAME", "PROVIDER", "CLIENT", "MODEL", "DAY")))
    out = []
    for line in lines[start:]:
        if not re.search(r"\S {2,}\S", line):
            break
        out.append(re.split(r" {2,}", line.strip()))
    return out


def test_stats_shows_today_and_this_month_per_key(db):
    now = time.time()
    today, month = day_start(now), month_start(now)
    insert(db, ts=now - 1, client_key_id=1, client_name="alice", provider="cerebras", prompt_tokens=1000,
           completion_tokens=500, cost_usd=0.5)
    insert(db, ts=now - 2, client_key_id=1, client_name="alice", provider="cerebras", prompt_tokens=100,
           completion_tokens=0, cost_usd=None, priced=0)
    earlier = today - 3600 if today - 3600 >= month else None  # earlier this month, when there is such a time
    if earlier is not None:
        insert(db, ts=earlier, client_key_id=1, client_name="alice", provider="zai", prompt_tokens=10,
               completion_tokens=10, cost_usd=0.25)
    insert(db, ts=month - 10, client_key_id=2, client_name="bob", provider="zai", prompt_tokens=9,
           completion_tokens=9, cost_usd=9.0)  # last month: not shown
    result = run(db, "stats")
    assert result.exit_code == 0, result.output
    header, *rows = table(result.output)
    assert header == ["NAME", "STATUS", "REQUESTS", "TODAY", "TOKENS_TODAY", "COST_TODAY", "MONTH", "TOKENS_MONTH",
                      "COST_MONTH", "LAST_USED"]
    by_name = {r[0]: r for r in rows}
    month_requests, month_tokens, month_cost = (3, "1620", "$0.7500") if earlier else (2, "1600", "$0.5000")
    assert by_name["alice"][3:9] == ["2", "1600", "$0.5000", str(month_requests), month_tokens, month_cost]
    assert by_name["bob"][3:9] == ["0", "0", "$0.0000", "0", "0", "$0.0000"]
    assert "2 keys (2 active), 0 requests in all" in result.output


def test_usage_groups_by_provider_client_model_and_day(db):
    now = time.time()
    insert(db, ts=now - 10, client_key_id=1, client_name="alice", provider="cerebras", model_served="zai-glm-4.7",
           prompt_tokens=1000, completion_tokens=100, cost_usd=0.0025, primary_cost_usd=0.0025)
    insert(db, ts=now - 2 * DAY, client_key_id=2, client_name="bob", provider="local", model_served="glm-local",
           prompt_tokens=2000, completion_tokens=200, cost_usd=0.0, primary_cost_usd=0.005)
    insert(db, ts=now - 2 * DAY, client_key_id=2, client_name="bob", provider="zai", model_served="glm-9",
           prompt_tokens=5, completion_tokens=5, cost_usd=None, priced=0, status=200)
    insert(db, ts=now - 30 * DAY, client_key_id=2, client_name="bob", provider="cerebras", prompt_tokens=7)

    result = run(db, "usage", "--since", "7d", "--by", "provider")
    assert result.exit_code == 0, result.output
    header, *rows = table(result.output)
    assert header == ["PROVIDER", "REQUESTS", "FAILED", "PROMPT", "COMPLETION", "CACHED", "REASONING", "COST", "SAVED"]
    assert [r[:5] + r[7:] for r in rows] == [
        ["cerebras", "1", "0", "1000", "100", "$0.0025", "$0.0000"],
        ["local", "1", "0", "2000", "200", "$0.0000", "$0.0050"],
        ["zai", "1", "0", "5", "5", "$0.0000 (+1 unpriced)", "$0.0000"],
    ]
    assert "3 requests, 3,310 tokens, $0.0025, saved $0.0050 against the primary provider" in result.output

    by_client = table(run(db, "usage", "--since", "60d", "--by", "client,day").output)
    assert by_client[0][:3] == ["CLIENT", "DAY", "REQUESTS"]
    assert [r[0] for r in by_client[1:]] == ["alice", "bob", "bob"]
    assert sum(int(r[2]) for r in by_client[1:]) == 4
    by_model = table(run(db, "usage", "--since", "7d", "--by", "model").output)
    assert [r[0] for r in by_model[1:]] == ["glm-9", "glm-local", "zai-glm-4.7"]


@pytest.mark.parametrize(
    "args, option",
    [
        (("--by", "user"), "'--by'"),
        (("--by", ""), "'--by'"),
        (("--since", "last week"), "'--since'"),
        (("--until", "7x"), "'--until'"),
        (("--since", "1d", "--until", "2d"), "'--since'"),
    ],
)
def test_usage_rejects_bad_options_by_name(db, args, option):
    result = run(db, "usage", *args)
    assert result.exit_code == 2
    assert f"Invalid value for {option}" in result.output and "Traceback" not in result.output


def test_usage_of_an_empty_window_says_so(db):
    result = run(db, "usage", "--since", "1h")
    assert result.exit_code == 0 and "no requests in that window" in result.output
