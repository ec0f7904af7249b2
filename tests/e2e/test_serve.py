"""`user-service serve` as a real process: it serves the API over HTTP, refuses to start when it should not, and
stops cleanly on SIGTERM. Runs on SQLite and PostgreSQL."""

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tests.conftest import TEST_SECRET
from tests.e2e.conftest import USER_SERVICE, StartServe, process_env, round_trip, run_command
from user_service import migrations

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def placeholder_secret() -> str:
    """The secret that ships in .env.example, which a newcomer might copy without generating a new one."""
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.startswith("JWT_SECRET_KEY="):
            return line.removeprefix("JWT_SECRET_KEY=")
    raise AssertionError(".env.example has no JWT_SECRET_KEY line")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


def env_for(db_url: str, **overrides: str) -> dict[str, str]:
    return process_env(DATABASE_URL=db_url, JWT_SECRET_KEY=TEST_SECRET, BCRYPT_ROUNDS="4", **overrides)


def assert_serve_refuses(args: list[str], *, env: dict[str, str], cwd: Path, reason: str) -> None:
    """`serve` exits 1 quickly with one line on stderr that contains `reason`, and no traceback."""
    result = run_command([USER_SERVICE, "serve", "--port", "0", *args], env=env, cwd=cwd, timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert reason in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_over_http_and_exits_0_on_sigterm(
    db_url: str, workdir: Path, start_serve: StartServe, workers: int
) -> None:
    env = env_for(db_url)
    migrated = run_command([USER_SERVICE, "migrate"], env=env, cwd=workdir)
    assert migrated.returncode == 0, migrated.stderr
    assert "already at" in migrated.stdout

    server = start_serve("--workers", str(workers), env=env, cwd=workdir)
    server.wait_for_output("Started server process", count=workers)
    for number in range(3):
        round_trip(server.base_url, username=f"user{number}")

    assert server.stop() == 0, server.output()
    assert "Traceback" not in server.output()


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        pytest.param(None, "JWT_SECRET_KEY is not set", id="missing"),
        pytest.param("short-but-random-9f3K", "JWT_SECRET_KEY must be at least 32 characters", id="too-short"),
        pytest.param(placeholder_secret(), "JWT_SECRET_KEY is a placeholder", id="placeholder"),
    ],
)
def test_serve_refuses_an_unusable_secret(db_url: str, workdir: Path, secret: str | None, reason: str) -> None:
    env = process_env(DATABASE_URL=db_url)
    if secret is not None:
        env["JWT_SECRET_KEY"] = secret
    assert_serve_refuses([], env=env, cwd=workdir, reason=reason)


def test_serve_refuses_a_copy_of_env_example(db_url: str, workdir: Path) -> None:
    (workdir / ".env").write_text((REPO / ".env.example").read_text(encoding="utf-8"), encoding="utf-8")
    assert_serve_refuses(
        [], env=process_env(DATABASE_URL=db_url), cwd=workdir, reason="JWT_SECRET_KEY is a placeholder"
    )


def test_serve_refuses_an_unmigrated_database_until_it_is_migrated(
    db_url: str, workdir: Path, start_serve: StartServe
) -> None:
    env = env_for(db_url)
    try:
        down = run_command([USER_SERVICE, "migrate", "--revision", "base", "--yes"], env=env, cwd=workdir)
        assert down.returncode == 0, down.stderr

        assert_serve_refuses([], env=env, cwd=workdir, reason="run `user-service migrate`")

        up = run_command([USER_SERVICE, "migrate"], env=env, cwd=workdir)
        assert up.returncode == 0, up.stderr
        server = start_serve(env=env, cwd=workdir)
        round_trip(server.base_url)
    finally:
        # The PostgreSQL database is shared by the whole run: leave it at head whatever happened above.
        engine = create_engine(db_url)
        try:
            migrations.migrate_to(engine, "head")
        finally:
            engine.dispose()
