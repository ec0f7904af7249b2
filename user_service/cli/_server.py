"""Running the app under uvicorn (imported only by `serve`, so that `--help` stays fast)."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from user_service.config import Settings
from user_service.errors import ErrorCode
from user_service.events import logging_config

APP_FACTORY = "user_service.api.app:create_app"
GRACEFUL_SHUTDOWN_SECONDS = 30
_HEADERS_END = b"\r\n\r\n"


@dataclass(frozen=True)
class HeaderLimits:
    """What one request's head (request line and headers) may cost, and how long a client may take to send it."""

    max_bytes: int
    max_count: int
    timeout_seconds: float


def _refusal(status: int, reason: str, detail: str, code: str) -> bytes:
    body = json.dumps({"detail": detail, "code": code}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, which buffers a request's head without limit and waits for it forever, with
    a bound on the head's bytes and header count (431, the connection closed at once) and on the time a client may
    take to send it (the connection closed)."""

    def __init__(self, *args: Any, header_limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_limits = header_limits
        self._reading_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._header_count = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading_head:
            # Only the bytes up to the end of the head count: a body may arrive in the same read.
            window = self._head_tail + data
            end = window.find(_HEADERS_END)
            self._head_bytes += len(data) if end < 0 else max(end + len(_HEADERS_END) - len(self._head_tail), 0)
            self._head_tail = window[-(len(_HEADERS_END) - 1) :]
            if self._head_bytes > self.header_limits.max_bytes:
                self._refuse_head(f"The request's headers are larger than {self.header_limits.max_bytes} bytes.")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count <= self.header_limits.max_count:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head, self._head_bytes, self._head_tail = False, 0, b""
        self._disarm_head_timer()
        if self._header_count > self.header_limits.max_count:
            self._refuse_head(f"The request has more than {self.header_limits.max_count} headers.")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        self._reading_head = True
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _refuse_head(self, detail: str) -> None:
        self._refused = True
        self._disarm_head_timer()
        self.logger.warning("request refused: %s", detail)
        if not self.transport.is_closing():
            self.transport.write(_refusal(431, "Request Header Fields Too Large", detail, ErrorCode.HEADERS_TOO_LARGE))
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_limits.timeout_seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Between requests uvicorn's own keep-alive timeout applies; this one ends a head sent too slowly.
        if self._reading_head and not self.transport.is_closing():
            self.transport.close()


class ClosingMultiprocess(Multiprocess):
    """uvicorn's worker supervisor, closing its own copy of the listening socket on SIGTERM: otherwise the kernel
    keeps queueing new connections on it while the workers drain, and resets them when the supervisor exits. It
    reports each worker it replaces (one that died, or retired by a restart) to `on_worker_exit`."""

    def __init__(self, *args: Any, on_worker_exit: Callable[[int], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_worker_exit = on_worker_exit

    def handle_term(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().handle_term()

    def keep_subprocess_alive(self) -> None:
        before = [process.pid for process in self.processes]
        super().keep_subprocess_alive()
        self._report_exits(before)

    def restart_all(self) -> None:
        before = [process.pid for process in self.processes]
        super().restart_all()
        self._report_exits(before)

    def _report_exits(self, before: list[int | None]) -> None:
        if self.on_worker_exit is None:
            return
        now = {process.pid for process in self.processes}
        for pid in before:
            if pid is not None and pid not in now:
                self.on_worker_exit(pid)


def server_config(settings: Settings, *, host: str, port: int, workers: int, reload: bool) -> uvicorn.Config:
    """uvicorn's configuration for `serve`, with the connection and header limits of `settings`."""
    header_limits = HeaderLimits(
        max_bytes=settings.http_max_header_bytes,
        max_count=settings.http_max_headers,
        timeout_seconds=settings.http_header_timeout_seconds,
    )
    return uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level=settings.log_level.lower(),
        log_config=logging_config(settings.log_format, settings.log_level),
        # The app writes its own access log (ACCESS_LOG), with the request id and the client address it computed.
        access_log=False,
        # The client address is taken from X-Forwarded-For by the app itself, and only from TRUSTED_PROXIES.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # A partial of a module-level class: worker processes receive the configuration pickled.
        http=functools.partial(BoundedHttpToolsProtocol, header_limits=header_limits),  # type: ignore[arg-type]
        limit_concurrency=settings.http_max_connections,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        # In case the h11 protocol is ever chosen: its own bound on a request's head.
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
    )


def run_server(settings: Settings, *, host: str, port: int, workers: int, reload: bool) -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests finish first, and a SIGTERM stop exits 0. With
    METRICS_PORT, the workers' metrics are added up and served on their own listener meanwhile."""
    with ExitStack() as stack:
        on_worker_exit = None
        if settings.metrics_port is not None:
            from user_service.cli import _metrics

            # Before the configuration is built (which may import the app, and with it prometheus_client).
            directory = stack.enter_context(_metrics.metrics_directory())
            on_worker_exit = functools.partial(_metrics.forget_worker, directory)
        config = server_config(settings, host=host, port=port, workers=workers, reload=reload)
        if settings.metrics_port is not None:
            stack.enter_context(_metrics.metrics_listener(settings.metrics_host, settings.metrics_port, directory))
        _serve(config, workers=workers, reload=reload, on_worker_exit=on_worker_exit)


def _serve(config: uvicorn.Config, *, workers: int, reload: bool, on_worker_exit: Callable[[int], None] | None) -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; SIGTERM is a normal stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if workers > 1 and not reload:
        ClosingMultiprocess(config, sockets=[config.bind_socket()], on_worker_exit=on_worker_exit).run()
    elif reload:
        from uvicorn.supervisors import ChangeReload

        ChangeReload(config, target=uvicorn.Server(config).run, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
