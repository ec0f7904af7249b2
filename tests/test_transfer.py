"""Moving users in and out through the core: export streams every user, import keeps bcrypt hashes made by other
systems (so users log in with the password they had), and a file is imported whole or not at all."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import PASSWORD, FakeClock, postgres_database, registration
from user_service import migrations
from user_service.config import Settings
from user_service.db import make_engine
from user_service.errors import EmailTaken, InvalidInput, UserDisabled, UserIdTaken, UsernameTaken
from user_service.schemas import ImportedUser
from user_service.service import UserService, import_batch
from user_service.service import statements as sql
from user_service.service.import_batch import ImportReport
from user_service.validation import parse_input

# Made once with passlib 1.7.4's own pure-Python bcrypt (PASSLIB_BUILTIN_BCRYPT=enabled, backend "builtin"), not with
# the bcrypt package this service uses; the password of each is IMPORTED_PASSWORD.
IMPORTED_PASSWORD = "imported horse battery"
PASSLIB_2A = "$2a$04$u.UJgBZ.M4XHr1hMpNn2w.504Am7ok4DNpQXAjcJvkXQ02d987DCi"
PASSLIB_2Y = "$2y$04$MwumgZ9OzmYRUY9RYdcD3u19/VmJPYGdpSCoJ5mR2lybYNsx8zI9q"
PASSLIB_2B = "$2b$04$x.mgz5QbfNZvkKme5qf5AutVeEj/xHWWxYxVrGi1ZUeIDnqEsAIZ6"
PASSLIB_2Y_COST_5 = "$2y$05$BTCzlwMN7STNjHXRtwdx2ObYV7S8BlC4dXsKINDK8V/.IoomLwgkO"
USER_ID = "6f1c2d9e-5a3b-4c7d-8e9f-0a1b2c3d4e5f"


def jsonl(*records: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(record).encode() + b"\n" for record in records))


def line(username: str = "alice", **fields: Any) -> dict[str, Any]:
    return {"namespace": "app-x", "username": username, "password_hash": PASSLIB_2Y, **fields}


def run_import(service: UserService, source: io.BytesIO, **options: Any) -> tuple[ImportReport, list[str]]:
    problems: list[str] = []
    report = service.import_users(source, on_problem=lambda n, why: problems.append(f"{n}: {why}"), **options)
    return report, problems


def usernames(service: UserService) -> list[str]:
    return sorted(record["username"] for record in service.export_users())


@pytest.mark.parametrize("password_hash", [PASSLIB_2A, PASSLIB_2Y, PASSLIB_2B], ids=["2a", "2y", "2b"])
def test_users_imported_with_another_librarys_hash_log_in_with_their_password(
    service: UserService, password_hash: str
) -> None:
    report, problems = run_import(service, jsonl(line(password_hash=password_hash)))

    assert (report.imported, problems, report.written) == (1, [], True)
    assert service.login(namespace="app-x", username="alice", password=IMPORTED_PASSWORD).access_token
    with pytest.raises(Exception, match="Invalid namespace, username or password"):
        service.login(namespace="app-x", username="alice", password=PASSWORD)


def test_the_first_login_rehashes_an_imported_hash_of_another_cost(service: UserService) -> None:
    run_import(service, jsonl(line(password_hash=PASSLIB_2Y_COST_5)))

    service.login(namespace="app-x", username="alice", password=IMPORTED_PASSWORD)

    stored = next(service.export_users(include_password_hashes=True))["password_hash"]
    assert stored.startswith("$2b$04$")
    assert service.login(namespace="app-x", username="alice", password=IMPORTED_PASSWORD).access_token


def test_id_times_profile_and_state_are_kept_as_given(service: UserService) -> None:
    given = line(
        id=USER_ID,
        email="Alice@Example.com",
        full_name="Alice Liddell",
        avatar_url="https://cdn.example.com/a.png",
        extra={"plan": "pro"},
        is_active=False,
        email_verified=True,
        created_at="2019-05-01T10:00:00+02:00",
        updated_at="2020-01-01T00:00:00Z",
    )
    run_import(service, jsonl(given))

    (record,) = service.export_users()
    assert record == {
        "id": USER_ID,
        "namespace": "app-x",
        "username": "alice",
        "email": "alice@example.com",
        "full_name": "Alice Liddell",
        "avatar_url": "https://cdn.example.com/a.png",
        "extra": {"plan": "pro"},
        "is_active": False,
        "email_verified": True,
        "created_at": "2019-05-01T08:00:00+00:00",
        "updated_at": "2020-01-01T00:00:00+00:00",
    }


def test_a_plain_password_is_checked_against_the_policy_and_hashed(service: UserService) -> None:
    report, problems = run_import(
        service,
        jsonl(
            {"namespace": "app-x", "username": "alice", "password": PASSWORD},
            {"namespace": "app-x", "username": "bob", "password": "password"},
        ),
        skip_invalid=True,
    )

    assert (report.imported, report.refused) == (1, 1)
    assert problems[0].startswith("2: ")
    assert service.login(namespace="app-x", username="alice", password=PASSWORD).access_token


def test_any_refused_line_keeps_the_whole_file_out_and_every_one_is_reported(service: UserService) -> None:
    source = jsonl(
        line("alice"), line("b" * 65), line("carol", password_hash="$argon2id$v=19$m=65536$abc"), line("dan")
    )

    report, problems = run_import(service, source)

    assert not report.written
    assert [problem.split(":")[0] for problem in problems] == ["2", "3"]
    assert "bcrypt ($2a$, $2b$ or $2y$" in problems[1]
    assert usernames(service) == []


def test_skip_invalid_imports_the_valid_lines(service: UserService) -> None:
    report, _ = run_import(service, jsonl(line("alice"), line("b" * 65), line("dan")), skip_invalid=True)

    assert (report.imported, report.refused, report.written) == (2, 1, True)
    assert usernames(service) == ["alice", "dan"]


def test_duplicates_in_the_file_and_against_the_database_are_refused(service: UserService, clock: FakeClock) -> None:
    service.register(registration(namespace="app-x", username="stored", password=PASSWORD, email="s@example.com"))
    stored_id = next(service.export_users())["id"]
    source = jsonl(
        line("alice"),
        line("ALICE"),
        line("stored"),
        line("bob", email="S@example.com"),
        line("carol", id=stored_id),
        line("dan", id=USER_ID),
        line("erin", id=USER_ID),
    )

    report, problems = run_import(service, source)

    assert [problem.split(":")[0] for problem in problems] == ["2", "3", "4", "5", "7"]
    assert not report.written
    assert usernames(service) == ["stored"]


def test_upsert_replaces_existing_users_and_keeps_their_id(service: UserService) -> None:
    service.register(registration(namespace="app-x", username="alice", password=PASSWORD, full_name="Old"))
    (before,) = service.export_users()

    report, problems = run_import(
        service, jsonl(line("alice", full_name="New"), line("bob"), line("bob", is_active=False)), upsert=True
    )

    assert (report.imported, report.updated, problems) == (1, 2, [])
    alice, bob = sorted(service.export_users(), key=lambda record: record["username"])
    assert (alice["id"], alice["full_name"], alice["created_at"]) == (before["id"], "New", before["created_at"])
    assert bob["is_active"] is False
    assert service.login(namespace="app-x", username="alice", password=IMPORTED_PASSWORD).access_token


def test_upsert_refuses_an_id_that_differs_from_the_stored_users(service: UserService) -> None:
    service.register(registration(namespace="app-x", username="alice", password=PASSWORD))

    report, problems = run_import(service, jsonl(line("alice", id=USER_ID)), upsert=True)

    assert not report.written
    assert "differs" in problems[0]


def test_dry_run_counts_and_writes_nothing(service: UserService) -> None:
    service.register(registration(namespace="app-x", username="alice", password=PASSWORD))

    report, problems = run_import(service, jsonl(line("alice"), line("bob"), line("bob")), upsert=True, dry_run=True)

    assert (report.imported, report.updated, report.written, problems) == (1, 2, False, [])
    assert usernames(service) == ["alice"]
    assert service.login(namespace="app-x", username="alice", password=PASSWORD).access_token


def test_an_empty_file_is_refused(service: UserService) -> None:
    with pytest.raises(InvalidInput, match="no users"):
        run_import(service, io.BytesIO(b"\n  \n"))


def test_export_pages_through_every_namespace_in_key_order(service: UserService, clock: FakeClock) -> None:
    lines = [line(f"user{index:04d}", namespace=ns) for index in range(2500) for ns in ("b-app",)]
    lines += [line("first", namespace="a-app")]
    run_import(service, jsonl(*lines))

    everyone = list(service.export_users())
    one = list(service.export_users(namespace="b-app"))

    assert len(everyone) == 2501
    assert everyone[0]["username"] == "first"
    assert len({record["id"] for record in everyone}) == 2501
    assert [record["id"] for record in one] == [record["id"] for record in everyone[1:]]
    assert "password_hash" not in everyone[0]


def test_an_exported_line_is_compact_json_with_text_as_given_and_times_with_their_offset(service: UserService) -> None:
    """The line's bytes, not only its meaning: compact, text unescaped but for what JSON requires (quotes,
    backslashes, control characters), the id in its usual form, times as `isoformat` writes them (microseconds only
    when there are some), `extra` last."""
    full_name = 'Zoë "Z" O\'Brien \\ tab\there\u2028日本'
    run_import(
        service,
        jsonl(
            line("zoe", id=USER_ID, full_name=full_name, created_at="2021-02-03T04:05:06+00:00", extra={"k": "v"}),
            line("yan", created_at="2021-02-03T06:05:06.000007+02:00"),
        ),
    )

    zoe, yan = service.export_lines()

    expected = {
        "id": USER_ID,
        "namespace": "app-x",
        "username": "zoe",
        "email": None,
        "full_name": full_name,
        "avatar_url": None,
        "is_active": True,
        "email_verified": False,
        "created_at": "2021-02-03T04:05:06+00:00",
    }
    assert zoe.startswith(json.dumps(expected, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"updated_at":"')
    assert list(json.loads(zoe).items())[-1] == ("extra", {"k": "v"})
    assert json.loads(zoe)["full_name"] == full_name
    assert json.loads(yan)["created_at"] == "2021-02-03T04:05:06.000007+00:00"


def test_an_export_left_after_its_first_page_ends_cleanly(service: UserService) -> None:
    """Pages are read ahead on a thread: a reader that stops after a few lines (a closed pipe) leaves nothing
    running, and the next export starts from the first user again."""
    made = datetime(2021, 1, 1, tzinfo=UTC)
    users = (
        line(f"user{index:04d}", created_at=(made + timedelta(seconds=index)).isoformat()) for index in range(2100)
    )
    run_import(service, jsonl(*users))

    lines = service.export_lines()
    first = [next(lines) for _ in range(3)]
    lines.close()

    assert [json.loads(text)["username"] for text in first] == ["user0000", "user0001", "user0002"]
    assert sum(1 for _ in service.export_lines()) == 2100


def test_one_imported_user_through_the_core(service: UserService) -> None:
    data = parse_input(ImportedUser, line(id=USER_ID, email="a@example.com"))

    profile = service.create_imported_user(data)

    assert str(profile.id) == USER_ID
    assert service.login(namespace="app-x", username="alice", password=IMPORTED_PASSWORD).access_token
    for taken, error in (
        (line(), UsernameTaken),
        (line("bob", email="a@example.com"), EmailTaken),
        (line("bob", id=USER_ID), UserIdTaken),
    ):
        with pytest.raises(error):
            service.create_imported_user(parse_input(ImportedUser, taken))


# -- a round trip between databases -------------------------------------------------------------------------------


def _service_on(url: str, tmp_path: Path) -> UserService:
    settings = Settings(
        database_url=url,
        jwt_secret_key="tests-only-signing-key-0123456789-abcdefghij",
        bcrypt_rounds=4,
        upload_dir=tmp_path / "uploads",
        _env_file=None,  # type: ignore[call-arg]
    )
    engine = make_engine(settings)
    migrations.migrate_to(engine, "head")
    return UserService(settings, engine=engine)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database("user_service_transfer") as url:
        yield url


def _dump(service: UserService) -> list[dict[str, Any]]:
    return list(service.export_users(include_password_hashes=True))


def test_export_then_import_moves_users_from_sqlite_to_postgresql_and_back(tmp_path: Path, postgres_url: str) -> None:
    with _service_on(f"sqlite:///{tmp_path / 'a.db'}", tmp_path) as origin:
        origin.register(registration(namespace="app-x", username="alice", password=PASSWORD, extra={"k": "v"}))
        origin.register(registration(namespace="other", username="bob", password=PASSWORD, email="b@example.com"))
        run_import(origin, jsonl(line("carol", full_name="Carol Ünicode", password_hash=PASSLIB_2A)))
        origin.set_active(namespace="other", username="bob", active=False)
        exported = _dump(origin)

    def moved(target: UserService, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        report, problems = run_import(target, jsonl(*records))
        assert (report.imported, problems) == (3, [])
        return _dump(target)

    with _service_on(postgres_url, tmp_path) as postgres:
        in_postgres = moved(postgres, exported)
        assert in_postgres == exported
        assert postgres.login(namespace="app-x", username="alice", password=PASSWORD).access_token
        assert postgres.login(namespace="app-x", username="carol", password=IMPORTED_PASSWORD).access_token
    with _service_on(f"sqlite:///{tmp_path / 'b.db'}", tmp_path) as back:
        assert moved(back, in_postgres) == exported
        # The password is right (a wrong one would be InvalidCredentials) and the account stays disabled.
        with pytest.raises(UserDisabled):
            back.login(namespace="other", username="bob", password=PASSWORD)


def test_a_batch_of_new_users_is_written_without_looking_anyone_up(service: UserService) -> None:
    """New users are written at once, the unique indexes checking them: no lookup of the stored users runs before
    the write (an import of 100,000 new users spent most of its time on them). A batch with a taken name is looked up
    and its line reported."""
    run_import(service, jsonl(line("taken")))
    reads: list[str] = []

    def remember_reads(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM users" in statement:
            reads.append(statement)

    event.listen(service.engine, "before_cursor_execute", remember_reads)
    try:
        report, problems = run_import(service, jsonl(line("alice"), line("bob")))
        assert (report.imported, problems, reads) == (2, [], [])

        report, problems = run_import(service, jsonl(line("carol"), line("taken")), skip_invalid=True)
    finally:
        event.remove(service.engine, "before_cursor_execute", remember_reads)

    assert (report.imported, report.refused) == (1, 1)
    assert problems == ["2: user app-x/taken already exists (an earlier line or a stored user)"]
    assert len(reads) == 2  # by id and by name (the lines give no email)
    assert usernames(service) == ["alice", "bob", "carol", "taken"]


def test_a_user_stored_before_its_batch_is_written_is_reported_as_the_lines_problem(
    service: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user another request stores while the file is read, with a name the file holds: the batch's write meets
    the unique index, nothing of it stays, and the lookup that follows names the line; the file is kept out."""
    real_insert = import_batch.insert_new_rows

    def after_a_racing_registration(tx: Any, table: Any, rows: list[dict[str, Any]]) -> bool:
        tx.execute(sql.INSERT_USER, {**rows[-1], "id": uuid.uuid4(), "email": None})
        return real_insert(tx, table, rows)

    monkeypatch.setattr(import_batch, "insert_new_rows", after_a_racing_registration)

    report, problems = run_import(service, jsonl(line("alice"), line("bob")))

    assert problems == ["2: user app-x/bob already exists (an earlier line or a stored user)"]
    assert (report.imported, report.written) == (1, False)
    assert usernames(service) == []


def test_a_user_created_between_the_check_and_the_write_keeps_the_whole_file_out(
    service: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that collides is checked against the stored users before it is written; a user stored in between
    (another request, another instance) makes the write fail on the unique index: nothing of the file is kept and
    the message says to run the import again, on both databases (PostgreSQL writes the batch with COPY)."""
    run_import(service, jsonl(line("taken")))
    real_insert = import_batch.insert_rows

    def after_a_racing_registration(tx: Any, table: Any, rows: list[dict[str, Any]]) -> None:
        racer = {**rows[-1], "id": uuid.uuid4(), "email": None}
        tx.execute(sql.INSERT_USER, racer)
        real_insert(tx, table, rows)

    monkeypatch.setattr(import_batch, "insert_rows", after_a_racing_registration)

    with pytest.raises(UsernameTaken, match=r"during the import.*run it again"):
        run_import(service, jsonl(line("alice"), line("bob"), line("taken")), skip_invalid=True)
    assert usernames(service) == ["taken"]


def test_refused_lines_are_reported_in_the_order_of_the_file_across_batches(
    service: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are written while the next ones are read: a line refused when its batch is written (a name taken)
    and one refused as it is read (an invalid name) are still reported in the order of the file, each once."""
    monkeypatch.setattr(import_batch, "BATCH_SIZE", 2)
    run_import(service, jsonl(line("taken1"), line("taken2")))
    lines = [line("a1"), line("taken1"), line("x" * 65), line("a2"), line("taken2"), line("y" * 65), line("a3")]

    report, problems = run_import(service, jsonl(*lines), skip_invalid=True)

    assert [problem.split(":")[0] for problem in problems] == ["2", "3", "5", "6"]
    assert (report.users, report.imported, report.refused, report.written) == (7, 3, 4, True)
    assert usernames(service) == ["a1", "a2", "a3", "taken1", "taken2"]
