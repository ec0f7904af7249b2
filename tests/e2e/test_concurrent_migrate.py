"""Two `user-service migrate` processes started together on one fresh SQLite file: they queue, both succeed, and
the schema ends at the latest revision (as PostgreSQL's advisory lock makes them queue there)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET
from tests.e2e.conftest import COMMAND_TIMEOUT, USER_SERVICE, process_env
from user_service import migrations
from user_service.config import Settings
from user_service.db import make_engine

pytestmark = pytest.mark.e2e

# The failure came about half the time: several rounds make a pass by luck unlikely.
ROUNDS = 6


def revision_of(path: Path) -> str | None:
    engine = make_engine(Settings(database_url=f"sqlite:///{path}", _env_file=None), create=False)  # type: ignore[call-arg]
    try:
        return migrations.current_revision(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_two_migrations_at_once_on_a_fresh_sqlite_file_both_succeed(tmp_path: Path, round_number: int) -> None:
    database = tmp_path / f"round-{round_number}.db"
    env = process_env(DATABASE_URL=f"sqlite:///{database}", JWT_SECRET_KEY=TEST_SECRET)
    processes = [
        subprocess.Popen(
            [str(USER_SERVICE), "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
            outcomes.append((process.returncode, stderr.strip()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=COMMAND_TIMEOUT)

    assert outcomes == [(0, ""), (0, "")]
    assert revision_of(database) == migrations.head_revision()
