"""A stalled rate-limit Redis does not take `serve` down (ASVS 5.0 13.x: availability of a dependency's failure):
a real `redis-server` is stopped with SIGSTOP (it accepts connections and never answers) while logins, /health
and the profile are requested over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import PASSWORD, TEST_SECRET
from tests.e2e.conftest import USER_SERVICE, StartServe, process_env, run_command

pytestmark = pytest.mark.e2e

REDIS_START_DEADLINE = 10.0
CLIENT_TIMEOUT = 10.0
LOGINS = 8
# A login waits on Redis for at most its timeout (0.3 s) a few times over; far below the client's timeout.
LOGIN_DEADLINE = 5.0
FAST = 1.0


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]


START_ATTEMPTS = 5


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _start_redis(tmp_path: Path) -> RedisServer | None:
    """A redis-server on a port that was free a moment ago; None when another process took it first."""
    port = _unused_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + REDIS_START_DEADLINE
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return RedisServer(port, process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.05)
    process.kill()
    process.wait(10)
    return None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own on a loopback port (another tried if the first was taken meanwhile); always
    resumed and killed at the end."""
    server = None
    for _ in range(START_ATTEMPTS):
        server = _start_redis(tmp_path)
        if server is not None:
            break
    assert server is not None, "redis-server did not start"
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.process.pid, signal.SIGCONT)
        server.process.kill()
        server.process.wait(10)


def timed(call: httpx.Client, method: str, url: str, **kwargs: object) -> tuple[int, float]:
    started = time.monotonic()
    response = call.request(method, url, **kwargs)  # type: ignore[arg-type]
    return response.status_code, time.monotonic() - started


def test_a_stalled_redis_slows_nothing_much(redis_server: RedisServer, tmp_path: Path, start_serve: StartServe) -> None:
    """ASVS 5.0 13.x: with the rate-limit Redis stopped, logins still answer (the limit fails open) within a few
    tenths of a second each, and /health and GET /users/me stay fast."""
    env = process_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'stall.db'}",
        JWT_SECRET_KEY=TEST_SECRET,
        BCRYPT_ROUNDS="4",
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT="1000/minute",
        REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
    )
    assert run_command([USER_SERVICE, "migrate"], env=env, cwd=tmp_path).returncode == 0
    server = start_serve(env=env, cwd=tmp_path)
    account = {"namespace": "stall", "username": "alice", "password": PASSWORD}
    with httpx.Client(base_url=server.base_url, timeout=CLIENT_TIMEOUT) as http:
        assert http.post("/auth/register", json=account).status_code == 201
        token = http.post("/auth/login", json=account).json()["access_token"]
        redis_server.process.send_signal(signal.SIGSTOP)

        with ThreadPoolExecutor(LOGINS) as pool:
            logins = [pool.submit(timed, http, "POST", "/auth/login", json=account) for _ in range(LOGINS)]
            health = [timed(http, "GET", "/health") for _ in range(3)]
            profile = [timed(http, "GET", "/users/me", headers={"Authorization": f"Bearer {token}"}) for _ in range(3)]
            results = [login.result(timeout=CLIENT_TIMEOUT * 2) for login in logins]

    assert all(status == 200 for status, _ in results), results
    assert max(seconds for _, seconds in results) < LOGIN_DEADLINE, results
    assert all(status == 200 and seconds < FAST for status, seconds in health), health
    assert all(status == 200 and seconds < FAST for status, seconds in profile), profile
    assert "rate limit store unavailable" in server.output()
