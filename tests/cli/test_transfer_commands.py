"""`user-service export` and `import` as an operator runs them: files and pipes, the summary and exit code, and bad
input that gets a line number and a reason, never a traceback, and leaves the database as it was."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, Api, Cli
from tests.helpers import create_user, one_line_error
from tests.test_transfer import IMPORTED_PASSWORD, PASSLIB_2Y

VALID = {"namespace": "app-x", "username": "bob", "password_hash": PASSLIB_2Y}


def exported(cli: Cli, *options: str) -> list[dict[str, Any]]:
    result = cli("export", *options)
    assert result.exit_code == 0, result.output
    return [json.loads(text) for text in result.stdout.splitlines()]


def test_export_writes_one_user_a_line_and_hashes_only_when_asked(cli: Cli) -> None:
    assert create_user(cli, "--email", "alice@example.com").exit_code == 0
    assert cli("create-user", "other", "carol", "--password-stdin", input=PASSWORD + "\n").exit_code == 0

    plain = exported(cli)
    with_hashes = exported(cli, "--include-password-hashes", "--namespace", "app-x")

    assert [record["username"] for record in plain] == ["alice", "carol"]
    assert "password_hash" not in plain[0]
    assert [record["username"] for record in with_hashes] == ["alice"]
    assert with_hashes[0]["password_hash"].startswith("$2b$04$")


def test_export_to_a_file_is_readable_by_its_owner_only(cli: Cli, tmp_path: Path) -> None:
    assert create_user(cli).exit_code == 0
    target = tmp_path / "users.jsonl"

    result = cli("export", "--include-password-hashes", "--output", str(target))

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text())["username"] == "alice"


def test_import_from_stdin_and_the_user_logs_in(cli: Cli, web: Api) -> None:
    result = cli("import", "-", input=json.dumps(VALID) + "\n")

    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "imported 1, updated 0, skipped 0"
    assert web.login(username="bob", password=IMPORTED_PASSWORD).status_code == 200


def test_export_then_import_into_an_empty_database(cli: Cli, web: Api, tmp_path: Path) -> None:
    assert create_user(cli, "--extra", "plan=pro").exit_code == 0
    target = tmp_path / "users.jsonl"
    assert cli("export", "--include-password-hashes", "-o", str(target)).exit_code == 0
    assert cli("delete-user", "app-x", "alice", "--yes").exit_code == 0

    result = cli("import", str(target))

    assert result.exit_code == 0, result.output
    assert web.login().status_code == 200
    assert [json.loads(text) for text in target.read_text().splitlines()] == exported(cli, "--include-password-hashes")


def test_upsert_dry_run_and_skip_invalid_report_their_counts(cli: Cli, tmp_path: Path) -> None:
    assert create_user(cli, username="bob").exit_code == 0
    source = tmp_path / "users.jsonl"
    source.write_text(json.dumps(VALID) + "\n" + json.dumps({**VALID, "username": "carol"}) + "\n{}\n")

    refused = cli("import", str(source))
    dry = cli("import", str(source), "--upsert", "--dry-run")
    skipping = cli("import", str(source), "--upsert", "--skip-invalid")

    assert refused.exit_code == 1
    assert refused.stderr.splitlines()[0] == "line 1: user app-x/bob already exists (an earlier line or a stored user)"
    assert refused.stderr.splitlines()[-1].startswith("imported 0, updated 0, skipped 3: 2 lines refused")
    assert dry.stderr.splitlines()[-1] == "dry run, nothing written: would import 1, update 1, skip 1"
    assert skipping.exit_code == 1
    assert skipping.stderr.splitlines()[-1] == "imported 1, updated 1, skipped 1"
    assert [record["username"] for record in exported(cli)] == ["bob", "carol"]


BAD_LINES = [
    pytest.param(b'{"namespace": "app-x", ', "not valid JSON", id="malformed-json"),
    pytest.param(json.dumps({**VALID, "is_active": "yes"}).encode(), "is_active", id="wrong-type"),
    pytest.param(json.dumps({**VALID, "role": "admin"}).encode(), "role: Extra inputs are not permitted", id="unknown"),
    pytest.param(
        json.dumps({**VALID, "password_hash": "pbkdf2_sha256$600000$salt$hash"}).encode(),
        "password_hash must be a bcrypt ($2a$, $2b$ or $2y$, cost 04 to 31) hash",
        id="other-scheme",
    ),
    pytest.param(json.dumps({**VALID, "full_name": "x" * 201}).encode(), "at most 200 characters", id="over-long"),
    pytest.param(b'{"namespace": "app-x", "username": "b\xffb"}', "not valid UTF-8", id="invalid-utf8"),
    pytest.param(b"[1, 2]", "must be a JSON object", id="not-an-object"),
    pytest.param(b'{"a":' * 100_000, "longer than 256 KiB", id="too-long"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_a_bad_line_is_named_with_its_number_and_nothing_is_imported(
    cli: Cli, tmp_path: Path, bad: bytes, reason: str
) -> None:
    source = tmp_path / "users.jsonl"
    source.write_bytes(json.dumps({**VALID, "username": "first"}).encode() + b"\n\n" + bad + b"\n")

    result = cli("import", str(source))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("line 3: ")
    assert reason in first
    assert exported(cli) == []


@pytest.mark.parametrize(("content", "reason"), [(b"", "no users"), (None, "cannot read")], ids=["empty", "missing"])
def test_an_empty_or_missing_file_is_a_one_line_error(
    cli: Cli, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    source = tmp_path / "users.jsonl"
    if content is not None:
        source.write_bytes(content)

    assert reason in one_line_error(cli("import", str(source)))
