"""Helpers for real-process tests of the service run as several workers and instances: settings for `serve`,
many clients released at once (with the timings that prove they overlapped), a TCP proxy that plays a database
outage, and the CPU time of a server's processes. Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
from sqlalchemy import Engine, create_engine

from tests.conftest import TEST_SECRET, TemplateDatabase
from tests.e2e.conftest import Server, launch_serve, process_env
from user_service import migrations
from user_service.db import is_sqlite

REQUEST_TIMEOUT = 30.0
BARRIER_TIMEOUT = 30.0
# Long enough for a few hundred requests at a low bcrypt cost on a busy two-core machine.
BURST_TIMEOUT = 120.0
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Call:
    """One JSON request to send."""

    method: str
    url: str
    body: object
    headers: dict[str, str] = field(default_factory=dict)


def serve_env(db_url: str, **settings: str) -> dict[str, str]:
    """The environment for `serve`: this test's database, the test secret, cheap bcrypt, rate limits off."""
    base = {
        "DATABASE_URL": db_url,
        "JWT_SECRET_KEY": TEST_SECRET,
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMIT_ENABLED": "false",
    }
    return process_env(**{**base, **settings})


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str], cwd: Path, workers: int = 1, instances: int = 1) -> Iterator[list[Server]]:
    """`instances` separate `serve` processes on free loopback ports, started side by side, each with all its
    workers up, for as long as the block runs; always stopped. (For fixtures wider than one test, which the
    function-scoped `start_serve` cannot serve.)"""
    servers: list[Server] = []
    try:
        for index in range(instances):
            log = cwd / f"serve-{index}.log"
            servers.append(launch_serve("--workers", str(workers), *args, env=env, cwd=cwd, log=log))
        for server in servers:
            server.wait_until_healthy()
            # /health answers as soon as one worker is up; tests of several workers need them all.
            server.wait_for_output("Application startup complete.", count=workers)
        yield servers
    finally:
        for server in servers:
            server.stop()
            server.kill()


def migrated_copy(database: TemplateDatabase, folder: Path) -> str:
    """A fresh database at the latest revision, for fixtures wider than one test (each test then works in a
    namespace of its own)."""
    url = database.fresh(folder)
    with database_engine(url) as engine:
        migrations.migrate_to(engine, "head")
    return url


@contextlib.contextmanager
def database_engine(db_url: str) -> Iterator[Engine]:
    """An engine on the test's database, for checking what the server left behind (without prepared statements,
    which a transaction pooler in front would mix up)."""
    engine = create_engine(db_url, connect_args={} if is_sqlite(db_url) else {"prepare_threshold": None})
    try:
        yield engine
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Timed:
    """A response and when its request started and ended (time.monotonic)."""

    response: httpx.Response
    started: float
    ended: float


def released_together(
    base_url: str | Sequence[str], calls: Sequence[Call], *, clients: int | None = None
) -> list[Timed]:
    """Send `calls` from `clients` threads (one per call by default), each with its own client, the requests'
    results in the calls' order. Given several base URLs (several instances), client i talks to the (i mod n)th.

    Each thread's first request goes out whole but for the last byte of its body, so the server holds them all
    open at once; a barrier then releases the last bytes together. A thread's later calls follow one by one.
    """
    count = clients or len(calls)
    barrier = threading.Barrier(count, timeout=BARRIER_TIMEOUT)
    base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
    http_clients = [
        httpx.Client(base_url=base_urls[index % len(base_urls)], timeout=REQUEST_TIMEOUT) for index in range(count)
    ]
    results: list[Timed | None] = [None] * len(calls)

    def send(http: httpx.Client, index: int, *, held: bool) -> None:
        call = calls[index]
        payload = json.dumps(call.body).encode()
        started = time.monotonic()

        def body() -> Iterator[bytes]:
            nonlocal started
            yield payload[:-1]
            if held:
                barrier.wait()
            started = time.monotonic()
            yield payload[-1:]

        headers = {**call.headers, "Content-Type": "application/json", "Content-Length": str(len(payload))}
        response = http.request(call.method, call.url, content=body(), headers=headers)
        results[index] = Timed(response, started, time.monotonic())

    def run(worker: int) -> None:
        http = http_clients[worker]
        # Connect first, so no handshake stands between the barrier and the server; the schema needs no database.
        warm_up = http.get("/openapi.json")
        assert warm_up.status_code == 200, warm_up.text
        for index in range(worker, len(calls), count):
            send(http, index, held=index == worker)

    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [pool.submit(run, worker) for worker in range(count)]
            deadline = time.monotonic() + BURST_TIMEOUT
            for future in futures:
                future.result(timeout=max(deadline - time.monotonic(), 0.1))
    finally:
        for http in http_clients:
            http.close()
    done = [result for result in results if result is not None]
    assert len(done) == len(calls)
    return done


def assert_overlapped(results: Sequence[Timed]) -> None:
    """At least half of the requests were in flight at one same instant (a harness that let them run one after
    another would show one or two). Not all of them: the threads send their last bytes one after another as they
    wake from the barrier, and a request the server answers in a few milliseconds (a PATCH, a refresh) may be
    answered before the last thread has woken."""
    events = sorted([(result.started, 1) for result in results] + [(result.ended, -1) for result in results])
    in_flight = most = 0
    for _, change in events:
        in_flight += change
        most = max(most, in_flight)
    assert most >= len(results) / 2, f"at most {most} of the {len(results)} requests were in flight at once"


def peak_in_flight(results: Sequence[Timed]) -> int:
    """The largest number of requests in flight at one instant."""
    # At equal times an end sorts before a start, so touching intervals do not count as overlapping.
    events = sorted([(r.started, 1) for r in results] + [(r.ended, -1) for r in results])
    peak = current = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak


def status_and_code(response: httpx.Response) -> tuple[int, str | None]:
    """The status and the error code (None on success) of one response."""
    body = response.json() if response.content else None
    return response.status_code, body.get("code") if isinstance(body, dict) else None


def codes(results: Sequence[Timed]) -> list[tuple[int, str | None]]:
    """(status, error code) per response, sorted, for comparing a whole batch in one assertion."""
    return sorted((status_and_code(result.response) for result in results), key=lambda pair: (pair[0], pair[1] or ""))


def register(http: httpx.Client, account: dict[str, str], headers: dict[str, str] | None = None) -> None:
    created = http.post("/auth/register", json=account, headers=headers)
    assert created.status_code == 201, created.text


def login(http: httpx.Client, account: dict[str, str]) -> dict[str, str]:
    response = http.post("/auth/login", json=account)
    assert response.status_code == 200, response.text
    pair: dict[str, str] = response.json()
    return pair


def cpu_seconds(process_group: int) -> float:
    """CPU time used so far by every process in a process group (Linux /proc): a server's parent and workers."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ..., utime (12th), stime (13th).
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == process_group:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


class TcpProxy:
    """A loopback TCP forwarder to `target_port` that can fail like a database host and come back on its port.

    `cut("refused")`: every live connection is closed and the port refuses new ones (the server went away).
    `cut("unresponsive")`: live connections are closed and new ones are accepted but never answered (a hung host).
    `restore()`: forwarding resumes on the same port.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        # Bound on entry (port 0, so nothing can take it first); kept while the proxy lives, to come back on it.
        self.port = 0
        self._lock = threading.Lock()
        self._forwarding = True
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> TcpProxy:
        self._listen()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._close_listener()
        self._drop_connections()

    def cut(self, mode: str) -> None:
        assert mode in ("refused", "unresponsive"), mode
        with self._lock:
            self._forwarding = False
        if mode == "refused":
            self._close_listener()
        self._drop_connections()

    def restore(self) -> None:
        self._drop_connections()
        with self._lock:
            self._forwarding = True
        if self._listener is None:
            self._listen()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self._listener = listener
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, args=(listener, self._stop), daemon=True)
        self._acceptor.start()

    def _close_listener(self) -> None:
        listener, acceptor = self._listener, self._acceptor
        if listener is None or acceptor is None:
            return
        self._stop.set()
        acceptor.join(CONNECT_TIMEOUT)
        assert not acceptor.is_alive(), "the proxy's accept loop did not stop"
        listener.close()
        self._listener = self._acceptor = None

    def _drop_connections(self) -> None:
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not stop.is_set():
                if not selector.select(timeout=0.05):
                    continue
                client, _ = listener.accept()
                with self._lock:
                    self._sockets.add(client)
                    forwarding = self._forwarding
                if forwarding:
                    self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=CONNECT_TIMEOUT)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            # A cut that came while connecting must not leave this pair forwarding through the outage.
            if not self._forwarding:
                upstream.close()
                return
            self._sockets.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
