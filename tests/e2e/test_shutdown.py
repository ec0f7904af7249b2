"""Graceful shutdown of `serve`: on SIGTERM a request already being answered completes, new connections are refused
(not accepted and then dropped), and the process exits 0."""

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
from sqlalchemy import Connection, text

from tests.conftest import PASSWORD, bearer
from tests.e2e._cluster import REQUEST_TIMEOUT, database_engine, serve_env
from tests.e2e.conftest import StartServe

pytestmark = pytest.mark.e2e

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


def lock_waiters(connection: Connection) -> int:
    """How many sessions on this database wait for a lock another holds."""
    # Within a transaction PostgreSQL keeps showing the activity it read first: drop that snapshot each time.
    connection.execute(text("SELECT pg_stat_clear_snapshot()"))
    waiting = connection.execute(
        text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
    ).scalar_one()
    return int(waiting)


# The request in flight waits on the user's row, locked by the test from its own connection until after SIGTERM: a
# row lock is something PostgreSQL shows waiters of, so the test knows the request is being answered.
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_the_request_in_flight_refuses_new_connections_and_exits_0(
    db_url: str, tmp_path: Path, start_serve: StartServe, workers: int
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    # The request waits on the test's row lock for as long as the test holds it, not the default lock timeout.
    server = start_serve("--workers", str(workers), env=serve_env(db_url, DB_LOCK_TIMEOUT_SECONDS="60"), cwd=workdir)
    server.wait_for_output("Application startup complete.", count=workers)
    port = int(server.base_url.rsplit(":", 1)[1])
    account = {"namespace": "shutdown", "username": "alice", "password": PASSWORD}
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as http:
        user_id = http.post("/auth/register", json=account).json()["id"]
        token = http.post("/auth/login", json=account).json()["access_token"]

    outcome: dict[str, object] = {}

    def patch() -> None:
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as http:
            outcome["response"] = http.patch("/users/me", json={"full_name": "Alice"}, headers=bearer(token))
        outcome["ended"] = time.monotonic()

    request = threading.Thread(target=patch)
    probes: list[tuple[str, float]] = []
    with database_engine(db_url) as engine, engine.connect() as connection:
        row_lock = connection.begin()
        connection.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": user_id})
        request.start()
        try:
            deadline = time.monotonic() + DEADLINE
            while lock_waiters(connection) < 1:
                assert request.is_alive(), "the request was answered without waiting for the row lock"
                assert time.monotonic() < deadline, "the request never waited for the row lock"
                request.join(POLL_INTERVAL)

            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            deadline = time.monotonic() + DEADLINE
            while not probes or (probes[-1][0] != "refused" and time.monotonic() < deadline):
                probes.append((probe(port), time.monotonic()))
                # Waiting on the server doubles as the probe interval.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.process.wait(POLL_INTERVAL)
            # The request has been held all along: it is still in flight.
            assert request.is_alive()
        finally:
            row_lock.rollback()
            request.join(REQUEST_TIMEOUT)
    assert not request.is_alive()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(DEADLINE)
    exit_code = server.process.poll()

    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == "Alice"
    ended = outcome["ended"]
    assert isinstance(ended, float)
    timeline = [(kind, round(at - signalled, 2)) for kind, at in probes] + [
        ("request answered", round(ended - signalled, 2))
    ]
    assert probes[-1][0] == "refused", f"new connections were not refused after SIGTERM (s after it): {timeline}"
    assert exit_code == 0, server.output()
    assert "Traceback" not in server.output()
