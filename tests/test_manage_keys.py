import pytest
from click.testing import CliRunner

from manage_keys import cli


def run(db, *args):
    result = CliRunner().invoke(cli, ["--db", str(db), *args])
    return result


def test_add_list_revoke_enable_stats(tmp_path):
    db = tmp_path / "k.db"
    added = run(db, "add", "laptop")
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[0]
    assert key.startswith("sk-glm-")

    listed = run(db, "list")
    assert listed.exit_code == 0
    assert "laptop" in listed.output and "active" in listed.output
    assert key not in listed.output and key[:12] in listed.output

    assert run(db, "revoke", "laptop").exit_code == 0
    assert "revoked" in run(db, "list").output
    assert run(db, "enable", "1").exit_code == 0
    assert run(db, "revoke", key).exit_code == 0

    stats = run(db, "stats")
    assert stats.exit_code == 0
    assert "1 keys (0 active), 0 requests in all" in stats.output


def test_user_errors_are_one_line_without_traceback(tmp_path):
    db = tmp_path / "k.db"
    run(db, "add", "dup")
    for args in (("add", "dup"), ("revoke", "ghost"), ("enable", "99")):
        result = run(db, *args)
        assert result.exit_code == 1, args
        assert result.output.startswith("Error: ")
        assert "Traceback" not in result.output
        assert result.output.strip().count("\n") == 0


def test_unopenable_database_is_a_clear_error(tmp_path):
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    result = run(not_a_db, "list")
    assert result.exit_code == 1
    assert "cannot open key database" in result.output
    assert "Traceback" not in result.output


def test_db_from_environment(tmp_path, monkeypatch):
    db = tmp_path / "env.db"
    monkeypatch.setenv("INCOMING_KEY_DB", str(db))
    assert CliRunner().invoke(cli, ["add", "viaenv"]).exit_code == 0
    assert db.exists()


def test_empty_list_says_how_to_add(tmp_path):
    assert "manage_keys.py add" in run(tmp_path / "k.db", "list").output


def test_admin_keys_and_role_changes(tmp_path):
    db = tmp_path / "k.db"
    added = run(db, "add", "ops", "--admin")
    assert added.exit_code == 0 and "created admin key" in added.stderr
    run(db, "add", "laptop")
    listed = run(db, "list").output
    assert "ROLE" in listed
    assert [line.split()[4] for line in listed.splitlines()[1:]] == ["admin", "client"]
    assert run(db, "role", "laptop", "admin").output.strip() == "key 2 (laptop) is now admin"
    assert run(db, "role", "ops", "client").exit_code == 0
    assert [line.split()[4] for line in run(db, "list").output.splitlines()[1:]] == ["client", "admin"]
    bad = run(db, "role", "laptop", "root")
    assert bad.exit_code == 2 and "'root' is not one of 'admin', 'client'" in bad.output


def test_budget_set_show_clear(tmp_path):
    db = tmp_path / "k.db"
    run(db, "add", "laptop")
    shown = run(db, "budget", "laptop", "--daily-usd", "5", "--monthly-usd", "50", "--daily-tokens", "2000000")
    assert shown.exit_code == 0, shown.output
    assert shown.output.strip() == ("key 1 (laptop) budgets: daily $5.00, monthly $50.00, "
                                    "daily tokens 2,000,000, monthly tokens none")
    run(db, "budget", "laptop", "--monthly-tokens", "9")  # a subset: the others stay
    assert "daily $5.00, monthly $50.00, daily tokens 2,000,000, monthly tokens 9" in run(db, "budget", "1").output
    assert "daily none, monthly none, daily tokens none, monthly tokens none" in run(
        db, "budget", "laptop", "--clear").output


def test_limits_set_show_clear(tmp_path):
    db = tmp_path / "k.db"
    run(db, "add", "laptop")
    assert run(db, "limits", "laptop", "--rpm", "60", "--tpm", "200000").output.strip() == (
        "key 1 (laptop) rate limits: 60 requests and 200,000 tokens per minute")
    assert "none requests and none tokens" in run(db, "limits", "laptop", "--clear").output


@pytest.mark.parametrize(
    "args, says",
    [
        (("budget", "laptop", "--daily-usd", "-1"), "-1"),
        (("budget", "laptop", "--daily-usd", "nan"), "daily_usd must be a finite number"),
        (("budget", "laptop", "--daily-tokens", "lots"), "'lots' is not a valid integer"),
        (("budget", "laptop", "--clear", "--daily-usd", "5"), "--clear removes every one of them"),
        (("limits", "laptop", "--rpm", "-5"), "-5"),
        (("budget", "ghost", "--daily-usd", "5"), "no key matches 'ghost'"),
        (("limits", "ghost"), "no key matches 'ghost'"),
    ],
)
def test_budget_and_limit_errors_are_clear(tmp_path, args, says):
    db = tmp_path / "k.db"
    run(db, "add", "laptop")
    result = run(db, *args)
    assert result.exit_code != 0 and says in result.output
    assert "Traceback" not in result.output
    assert "none" in run(db, "budget", "laptop").output  # nothing was changed
