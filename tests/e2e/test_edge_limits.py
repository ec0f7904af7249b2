"""`user-service serve` bounds what a client can make it hold before a request reaches the app (ASVS 5.0 4.1.x,
13.x: resource limits at the HTTP layer): the size and count of a request's headers, the time to send them, and
the number of connections. Checked with raw sockets against a real process."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET
from tests.e2e.conftest import USER_SERVICE, Server, StartServe, process_env, run_command

pytestmark = pytest.mark.e2e

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 50
HEADER_TIMEOUT_SECONDS = 1
SOCKET_TIMEOUT = 10.0
OVERSIZED_TOTAL = 32 * 1024 * 1024
CHUNK = 64 * 1024
# The server's peak memory may grow by this much at most while a client pushes OVERSIZED_TOTAL bytes of one header.
MEMORY_SLACK_BYTES = 8 * 1024 * 1024


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = process_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'edge.db'}",
        JWT_SECRET_KEY=TEST_SECRET,
        BCRYPT_ROUNDS="4",
        HTTP_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        HTTP_MAX_HEADERS=str(MAX_HEADERS),
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_SECONDS),
    )
    migrated = run_command([USER_SERVICE, "migrate"], env=values, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    return values


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, start_serve: StartServe) -> Server:
    return start_serve(env=env, cwd=tmp_path)


@contextlib.contextmanager
def connection(server: Server) -> Iterator[socket.socket]:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT) as sock:
        yield sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or SOCKET_TIMEOUT passes)."""
    received = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def peak_memory_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_a_huge_header_is_refused_before_it_is_read_whole(server: Server) -> None:
    """ASVS 5.0 13.x (bounded resources): one header of many megabytes is cut off near the limit; the server's
    peak memory does not grow with what the client sends."""
    peak_before = peak_memory_bytes(server.process.pid)
    sent = 0
    with connection(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
            while sent < OVERSIZED_TOTAL:
                sock.sendall(b"a" * CHUNK)
                sent += CHUNK
            sock.sendall(b"\r\n\r\n")
        response = read_response(sock)

    assert sent < OVERSIZED_TOTAL, "the server read a 32 MiB header to its end"
    assert not response.startswith(b"HTTP/1.1 200"), response[:200]
    assert peak_memory_bytes(server.process.pid) - peak_before < MEMORY_SLACK_BYTES


def test_headers_over_the_limit_get_431(server: Server) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"
    with connection(server) as sock:
        sock.sendall(head)
        response = read_response(sock)

    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert b'"code": "headers_too_large"' in response


def test_too_many_headers_get_431(server: Server) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % number for number in range(MAX_HEADERS + 1))
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n")
        response = read_response(sock)

    assert response.startswith(b"HTTP/1.1 431 "), response[:200]


def test_headers_within_the_limits_are_served(server: Server) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % number for number in range(MAX_HEADERS - 2))
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + headers + b"\r\n")
        response = read_response(sock)

    assert response.startswith(b"HTTP/1.1 200 "), response[:200]


def test_a_head_sent_too_slowly_is_dropped(server: Server) -> None:
    """ASVS 5.0 13.x: a client that never finishes its headers (slowloris) loses the connection after
    HTTP_HEADER_TIMEOUT_SECONDS, however it trickles bytes in."""
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        response = read_response(sock)
        waited = time.monotonic() - started

    assert response == b""
    assert waited < SOCKET_TIMEOUT - 1


def test_an_idle_connection_is_dropped(server: Server) -> None:
    with connection(server) as sock:
        started = time.monotonic()
        assert read_response(sock) == b""
        assert time.monotonic() - started < SOCKET_TIMEOUT - 1


def test_connections_over_the_limit_get_503(env: dict[str, str], tmp_path: Path, start_serve: StartServe) -> None:
    """ASVS 5.0 13.x: HTTP_MAX_CONNECTIONS bounds the connections one worker holds; beyond it, a 503."""
    server = start_serve(env={**env, "HTTP_MAX_CONNECTIONS": "2", "HTTP_HEADER_TIMEOUT_SECONDS": "30"}, cwd=tmp_path)
    with connection(server), connection(server), connection(server) as third:
        third.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = read_response(third)

    assert response.startswith(b"HTTP/1.1 503 "), response[:200]
