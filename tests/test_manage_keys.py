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
