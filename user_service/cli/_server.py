"""Running the app under uvicorn (imported only by `serve`, so that `--help` stays fast)."""

from __future__ import annotations

import signal
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

from user_service.config import Settings
from user_service.events import logging_config

APP_FACTORY = "user_service.api.app:create_app"
GRACEFUL_SHUTDOWN_SECONDS = 30


class ClosingMultiprocess(Multiprocess):
    """uvicorn's worker supervisor, closing its own copy of the listening socket on SIGTERM: otherwise the kernel
    keeps queueing new connections on it while the workers drain, and resets them when the supervisor exits."""

    def handle_term(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().handle_term()


def run_server(settings: Settings, *, host: str, port: int, workers: int, reload: bool) -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests finish first, and a SIGTERM stop exits 0."""
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level=settings.log_level.lower(),
        log_config=logging_config(settings.log_format, settings.log_level),
        # The client address is taken from X-Forwarded-For by the app itself, and only from TRUSTED_PROXIES.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; SIGTERM is a normal stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if workers > 1 and not reload:
        ClosingMultiprocess(config, sockets=[config.bind_socket()]).run()
    elif reload:
        from uvicorn.supervisors import ChangeReload

        ChangeReload(config, target=uvicorn.Server(config).run, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
