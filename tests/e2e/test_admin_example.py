"""examples/password_reset.py against a real `serve`: an app's back end starts a reset with an admin key made by
the CLI, and the user completes it. Runs on SQLite and PostgreSQL."""

from pathlib import Path

import httpx2 as httpx
import pytest

import examples.password_reset as example
from tests.conftest import PASSWORD, TEST_SECRET
from tests.e2e.conftest import USER_SERVICE, StartServe, process_env, run_command

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "reset over real http"


def test_the_example_resets_a_password_over_http(
    db_url: str, tmp_path: Path, start_serve: StartServe, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = process_env(DATABASE_URL=db_url, JWT_SECRET_KEY=TEST_SECRET, BCRYPT_ROUNDS="4")
    made = run_command([USER_SERVICE, "create-admin-key", "--name", "e2e", "--namespace", "e2e"], env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    server = start_serve(env=env, cwd=tmp_path)
    monkeypatch.setenv("USER_SERVICE_URL", server.base_url)
    account = {"namespace": "e2e", "username": "alice", "password": PASSWORD}
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        assert http.post("/auth/register", json=account).status_code == 201
        pair = http.post("/auth/login", json=account).json()

        token = example.start_reset(key, "e2e", "alice")
        example.complete_reset(token, NEW_PASSWORD)

        assert http.get("/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"}).status_code == 401
        assert http.post("/auth/login", json=account).status_code == 401
        assert http.post("/auth/login", json={**account, "password": NEW_PASSWORD}).status_code == 200
    with pytest.raises(RuntimeError, match="one_time_token_invalid"):
        example.complete_reset(token, "another new password")


def test_a_key_revoked_by_the_cli_is_refused_at_once_by_every_running_instance(
    db_url: str, tmp_path: Path, start_serve: StartServe
) -> None:
    env = process_env(DATABASE_URL=db_url, JWT_SECRET_KEY=TEST_SECRET, BCRYPT_ROUNDS="4")
    made = run_command([USER_SERVICE, "create-admin-key", "--name", "doomed"], env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    instances = [start_serve(env=env, cwd=tmp_path), start_serve(env=env, cwd=tmp_path)]
    with httpx.Client(timeout=30.0) as http:
        http.post(
            instances[0].base_url + "/auth/register", json={"namespace": "e2e", "username": "a", "password": PASSWORD}
        )
        for server in instances:
            assert http.get(server.base_url + "/admin/namespaces/e2e/users", headers=headers).status_code == 200

        revoked = run_command([USER_SERVICE, "revoke-admin-key", "doomed"], env=env, cwd=tmp_path)

        assert revoked.returncode == 0, revoked.stderr
        for server in instances:
            refused = http.get(server.base_url + "/admin/namespaces/e2e/users", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["code"] == "invalid_token"
