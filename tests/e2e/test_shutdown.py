"""Graceful shutdown of `serve`: on SIGTERM a request already being answered completes, new connections are refused
(not accepted and then dropped), and the process exits 0. The database plays no part here, so SQLite only."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import PASSWORD
from tests.e2e._cluster import REQUEST_TIMEOUT, cpu_seconds, serve_env
from tests.e2e.conftest import StartServe

pytestmark = pytest.mark.e2e

# A login at this cost takes over a second here, long enough to signal the server in the middle of it.
BCRYPT_ROUNDS = "14"
# CPU the server must have spent on the login before the signal: proof that the request is being answered.
IN_FLIGHT_CPU_SECONDS = 0.25
DEADLINE = 15.0
POLL_INTERVAL = 0.02
PROBE_TIMEOUT = 5.0


def probe(port: int) -> str:
    """Try a new connection and a request on it: "refused", "answered", or "dropped" (accepted, never answered)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            first = sock.recv(16)
        except OSError:
            return "dropped"
    return "answered" if first.startswith(b"HTTP/1.1 ") else "dropped"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_the_request_in_flight_refuses_new_connections_and_exits_0(
    db_url: str, tmp_path: Path, start_serve: StartServe, workers: int
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    server = start_serve("--workers", str(workers), env=serve_env(db_url, BCRYPT_ROUNDS=BCRYPT_ROUNDS), cwd=workdir)
    server.wait_for_output("Application startup complete.", count=workers)
    port = int(server.base_url.rsplit(":", 1)[1])
    account = {"namespace": "shutdown", "username": "alice", "password": PASSWORD}
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as http:
        assert http.post("/auth/register", json=account).status_code == 201

    outcome: dict[str, object] = {}

    def slow_login() -> None:
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as http:
            outcome["response"] = http.post("/auth/login", json=account)
        outcome["ended"] = time.monotonic()

    idle_cpu = cpu_seconds(server.process.pid)
    login = threading.Thread(target=slow_login)
    login.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while cpu_seconds(server.process.pid) - idle_cpu < IN_FLIGHT_CPU_SECONDS:
            assert login.is_alive(), "the login was answered before the server was seen working on it"
            assert time.monotonic() < deadline, "the server never started working on the login"
            login.join(POLL_INTERVAL)

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        probes: list[tuple[str, float]] = []
        deadline = time.monotonic() + DEADLINE
        while not probes or (probes[-1][0] != "refused" and time.monotonic() < deadline):
            probes.append((probe(port), time.monotonic()))
            # Waiting on the server doubles as the probe interval.
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(POLL_INTERVAL)
    finally:
        login.join(REQUEST_TIMEOUT)
    assert not login.is_alive()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(DEADLINE)
    exit_code = server.process.poll()

    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200, response.text
    assert set(response.json()) >= {"access_token", "refresh_token"}
    ended = outcome["ended"]
    assert isinstance(ended, float)
    timeline = [(kind, round(at - signalled, 2)) for kind, at in probes] + [
        ("login answered", round(ended - signalled, 2))
    ]
    refused_in_time = probes[-1][0] == "refused" and probes[-1][1] < ended
    assert refused_in_time, (
        f"new connections were not refused while the request in flight ran (s after SIGTERM): {timeline}"
    )
    assert exit_code == 0, server.output()
    assert "Traceback" not in server.output()
