"""`serve`'s metrics listener: GET /metrics on a port of its own, the figures of every worker added up.

prometheus-client's multiprocess mode reads PROMETHEUS_MULTIPROC_DIR once, when it is first imported: `serve` sets
it (`metrics_directory`) before anything imports prometheus_client, in its own process and so in its workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
# Scrapes served at once, and how long one connection may take; the listener never grows past these.
MAX_SCRAPES = 4
SCRAPE_TIMEOUT_SECONDS = 10

log = logging.getLogger("user_service.metrics")


@contextmanager
def metrics_directory() -> Iterator[Path]:
    """A new, private directory for the workers' metric files, named in the environment (for this process and the
    workers it starts), removed with everything in it at the end."""
    if "prometheus_client.values" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    directory = Path(tempfile.mkdtemp(prefix="user-service-metrics-"))
    previous = os.environ.get(MULTIPROC_VARIABLE)
    os.environ[MULTIPROC_VARIABLE] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_VARIABLE, None)
        else:
            os.environ[MULTIPROC_VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)


def forget_worker(directory: Path, pid: int) -> None:
    """Drop the live gauges of a worker that exited (its counters stay: what it counted happened)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class _MetricsHandler(BaseHTTPRequestHandler):
    """GET /metrics, nothing else: other paths are 404, other methods 405."""

    server: MetricsServer
    timeout = SCRAPE_TIMEOUT_SECONDS
    server_version = "user-service-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        if self.path != METRICS_PATH:
            self._answer(404, b"not found\n")
            return
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.server.directory))  # type: ignore[no-untyped-call]
        self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    def _refuse_method(self) -> None:
        self._answer(405, b"method not allowed\n", headers={"Allow": "GET"})

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def _answer(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one every few seconds would drown the service's own lines."""


class MetricsServer(ThreadingHTTPServer):
    """A threaded HTTP server holding at most MAX_SCRAPES connections at once; the others are closed at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path) -> None:
        self.directory = directory
        self._slots = threading.BoundedSemaphore(MAX_SCRAPES)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _MetricsHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


@contextmanager
def metrics_listener(host: str, port: int, directory: Path) -> Iterator[MetricsServer]:
    """Serve the metrics of `directory` on host:port in a background thread until the block ends; a port that cannot
    be bound ends `serve` with one line."""
    try:
        server = MetricsServer((host, port), directory)
    except OSError as exc:
        from user_service.cli._output import exit_with_error

        exit_with_error(f"the metrics listener cannot bind {host}:{port}: {exc.strerror or exc}")
    bound_host, bound_port = server.socket.getsockname()[:2]
    thread = threading.Thread(target=server.serve_forever, name="user-service-metrics", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d%s, the workers' figures in %s", bound_host, bound_port, METRICS_PATH, directory)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
