"""`serve --env-file X` with real worker processes: the workers read X and the environment, never the working
directory's `.env`, even for settings X leaves unset."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import PASSWORD, TEST_SECRET, image_bytes
from tests.e2e.conftest import USER_SERVICE, StartServe, process_env, run_command

pytestmark = pytest.mark.e2e


def avatar_url_after_upload(base_url: str) -> str:
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        account = {"namespace": "e2e", "username": "alice", "password": PASSWORD}
        assert http.post("/auth/register", json=account).status_code == 201
        token = http.post("/auth/login", json=account).json()["access_token"]
        uploaded = http.post(
            "/users/me/avatar",
            files={"file": ("avatar.png", image_bytes("PNG"), "image/png")},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert uploaded.status_code == 200, uploaded.text
        url: str = uploaded.json()["avatar_url"]
    return url


def test_workers_read_only_the_given_env_file(db_url: str, tmp_path: Path, start_serve: StartServe) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    # A setting the given file leaves unset, which the working directory's .env would otherwise supply.
    (workdir / ".env").write_text("PUBLIC_BASE_URL=https://wrong.example.com\n", encoding="utf-8")
    given = tmp_path / "service.env"
    given.write_text(
        f"DATABASE_URL={db_url}\nJWT_SECRET_KEY={TEST_SECRET}\nBCRYPT_ROUNDS=4\nUPLOAD_DIR={tmp_path / 'uploads'}\n",
        encoding="utf-8",
    )
    env = process_env()
    migrated = run_command([USER_SERVICE, "migrate", "--env-file", given], env=env, cwd=workdir)
    assert migrated.returncode == 0, migrated.stderr

    server = start_serve("--workers", "2", "--env-file", str(given), env=env, cwd=workdir)
    server.wait_for_output("Started server process", count=2)

    assert avatar_url_after_upload(server.base_url).startswith("/uploads/")
