"""examples/downstream_service.py as a real process beside a real `user-service serve`: it verifies tokens through the
JWKS URL only, accepts a login's token, refuses forged, expired, wrong-audience and unknown-kid tokens, and accepts
tokens from before and after a `keys rotate`, with no failed request while keys rotate under load. Runs on SQLite
and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import PASSWORD, TEST_SECRET, bearer
from tests.e2e._cluster import serve_env
from tests.e2e.conftest import USER_SERVICE, Server, StartServe, run_command
from tests.helpers import forge
from user_service.config import Settings
from user_service.service import UserService

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LOAD_SECONDS = 60.0
LOAD_MAX_REQUESTS = 2000


@pytest.fixture
def accounts(start_serve: StartServe, db_url: str, tmp_path: Path) -> tuple[Server, dict[str, str]]:
    env = serve_env(db_url)
    return start_serve(env=env, cwd=tmp_path), env


@pytest.fixture
def downstream(accounts: tuple[Server, dict[str, str]], tmp_path: Path) -> Iterator[Server]:
    server, env = accounts
    log = tmp_path / "downstream.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.downstream_service:app", "--host", "127.0.0.1", "--port", "0"],
            # The downstream service knows only where user-service runs: no database, no secret.
            env={key: value for key, value in env.items() if key not in ("DATABASE_URL", "JWT_SECRET_KEY")}
            | {"USER_SERVICE_URL": server.base_url},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Server(process, log)
    try:
        service.wait_until_healthy()
        yield service
    finally:
        service.stop()
        service.kill()


def login(base_url: str) -> str:
    account = {"namespace": "shop", "username": "alice", "password": PASSWORD}
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        if http.post("/auth/login", json=account).status_code != 200:
            assert http.post("/auth/register", json=account).status_code == 201
        response = http.post("/auth/login", json=account)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def orders(downstream: Server, token: str) -> httpx.Response:
    return httpx.get(f"{downstream.base_url}/orders", headers=bearer(token), timeout=30.0)


def signed_with_the_real_key(db_url: str, claims: dict[str, Any]) -> str:
    """Claims signed with the service's current private key and kid, so only the claims are wrong."""
    settings = Settings(database_url=db_url, jwt_secret_key=TEST_SECRET, _env_file=None)  # type: ignore[call-arg]
    with UserService(settings) as service:
        service.prepare_keys()
        snapshot = service.context.keys.snapshot
        assert snapshot is not None
        signer = snapshot.signer
        return jwt.encode(claims, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid})


def test_a_login_token_is_accepted_and_bad_ones_refused(
    accounts: tuple[Server, dict[str, str]], downstream: Server, db_url: str
) -> None:
    server, _ = accounts
    token = login(server.base_url)

    accepted = orders(downstream, token)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["username"] == "alice"

    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    now = int(time.time())
    stranger = ec.generate_private_key(ec.SECP256R1())
    bad = {
        "forged-with-the-secret": forge(claims, key=TEST_SECRET, kid=kid),
        "forged-with-another-key": jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": kid}),
        "expired": signed_with_the_real_key(db_url, {**claims, "iat": now - 1000, "exp": now - 100}),
        "wrong-audience": signed_with_the_real_key(db_url, {**claims, "aud": "billing"}),
        "unknown-kid": jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": uuid.uuid4().hex}),
    }
    for name, forged in bad.items():
        response = orders(downstream, forged)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), name
    assert httpx.get(f"{downstream.base_url}/orders", timeout=30.0).status_code == 401
    # A faithful re-signing is accepted: the refusals above are about what each one changed.
    assert orders(downstream, signed_with_the_real_key(db_url, {**claims, "jti": uuid.uuid4().hex})).status_code == 200


def rotate(env: dict[str, str], cwd: Path) -> None:
    result = run_command([USER_SERVICE, "keys", "rotate"], env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr


def test_tokens_from_before_and_after_a_rotation_verify_with_no_failed_request(
    accounts: tuple[Server, dict[str, str]], downstream: Server, tmp_path: Path
) -> None:
    server, env = accounts
    before = login(server.base_url)
    assert orders(downstream, before).status_code == 200
    failures: list[str] = []
    done = threading.Event()
    counts = [0]

    def load() -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        with httpx.Client(timeout=30.0) as http:
            for _ in range(LOAD_MAX_REQUESTS):
                if done.is_set() or time.monotonic() > deadline:
                    return
                for url in (f"{downstream.base_url}/orders", f"{server.base_url}/users/me"):
                    status = http.get(url, headers=bearer(before)).status_code
                    counts[0] += 1
                    if status != 200:
                        failures.append(f"{url}: {status}")

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        rotate(env, tmp_path)
        # A fresh process reads the keys as they are now: its token is signed by the new current key.
        issued = run_command([USER_SERVICE, "issue-token", "shop", "alice"], env=env, cwd=tmp_path)
        assert issued.returncode == 0, issued.stderr
        after = issued.stdout.strip()
        rotate(env, tmp_path)
    finally:
        done.set()
        for worker in workers:
            worker.join(timeout=LOAD_SECONDS + 30)

    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
    for token in (before, after):
        assert orders(downstream, token).status_code == 200
        me = httpx.get(f"{server.base_url}/users/me", headers=bearer(token), timeout=30.0)
        assert me.status_code == 200, me.text
    assert counts[0] > 0
    assert failures == []
