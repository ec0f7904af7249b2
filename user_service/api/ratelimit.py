"""Per-client-address request limits (the `limits` library): in memory by default, in Redis when REDIS_URL is
set so that several instances share the counts.

A Redis that is down or stalled must not take the service with it: every call has short connect and read
timeouts, a run of failures opens a circuit breaker that skips Redis for a while (requests are let through, the
account lockout still holds), and the calls run on a few threads of their own, never on the pool that serves
everything else.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from limits import RateLimitItem, parse, storage, strategies

from user_service.addresses import client_key
from user_service.config import Settings
from user_service.errors import RateLimited

log = logging.getLogger("user_service.api")
BREAKER_FAILURES = 3
BREAKER_OPEN_SECONDS = 30.0
REDIS_THREADS = 4
# Redis calls waiting for one of those threads at most; beyond, a request is let through uncounted.
REDIS_MAX_PENDING = 64


def key_prefix(settings: Settings) -> str:
    """RATE_LIMIT_KEY_PREFIX, or one derived from the deployment's JWT issuer, so that deployments sharing one Redis
    database count apart."""
    return settings.rate_limit_key_prefix or f"user-service:{settings.jwt_issuer}"


class CircuitBreaker:
    """Open after `failures` consecutive failures; closed again `open_seconds` later (then one failure reopens it)."""

    def __init__(self, *, failures: int, open_seconds: float, monotonic: Callable[[], float]) -> None:
        self.failures = failures
        self.open_seconds = open_seconds
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until: float | None = None

    @property
    def is_open(self) -> bool:
        return self._open_until is not None and self.monotonic() < self._open_until

    def record_success(self) -> None:
        with self._lock:
            self._consecutive, self._open_until = 0, None

    def record_failure(self) -> bool:
        """Count a failure; True when this one opened the breaker."""
        with self._lock:
            self._consecutive += 1
            if self._consecutive < self.failures or self.is_open:
                return False
            self._open_until = self.monotonic() + self.open_seconds
            self._consecutive = self.failures - 1  # after the pause, one more failure reopens it
            return True


class AddressRateLimiter:
    """A sliding-window counter per (endpoint, client address): at most RATE_LIMIT requests per window."""

    def __init__(self, settings: Settings, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.enabled = settings.rate_limit_enabled
        self.item: RateLimitItem = parse(settings.rate_limit)
        self.prefix = key_prefix(settings)
        self.uses_redis = self.enabled and settings.redis_url is not None
        if settings.redis_url is not None:
            timeout = settings.rate_limit_redis_timeout_seconds
            self.storage = storage.storage_from_string(
                settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        else:
            self.storage = storage.storage_from_string("memory://")
        self.strategy = strategies.SlidingWindowCounterRateLimiter(self.storage)
        self.breaker = CircuitBreaker(failures=BREAKER_FAILURES, open_seconds=BREAKER_OPEN_SECONDS, monotonic=monotonic)
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0
        self._pending_lock = threading.Lock()

    @property
    def blocks(self) -> bool:
        """Whether a call waits on Redis (a round trip): not for counts in memory, nor while the breaker is open."""
        return self.uses_redis and not self.breaker.is_open

    def hit(self, endpoint: str, address: str | None) -> None:
        """Count one request; RateLimited (429 with Retry-After) once the address is over the limit."""
        if not self.enabled or self.breaker.is_open:
            return
        key = client_key(address)
        try:
            allowed = self.strategy.hit(self.item, self.prefix, endpoint, key)
            if not allowed:
                reset_at = self.strategy.get_window_stats(self.item, self.prefix, endpoint, key).reset_time
        except Exception as exc:  # the limiter's store is down: stay available; the account lockout still holds
            opened = self.breaker.record_failure()
            log.warning(
                "rate limit store unavailable (%s); request allowed%s",
                type(exc).__name__,
                f"; not asked again for {self.breaker.open_seconds:g} s" if opened else "",
            )
            return
        self.breaker.record_success()
        if not allowed:
            raise RateLimited(math.ceil(max(reset_at - time.time(), 1)))

    async def hit_async(self, endpoint: str, address: str | None) -> None:
        """`hit` from the event loop: in place for counts in memory, else on the limiter's own threads."""
        if not self.blocks:
            self.hit(endpoint, address)
            return
        with self._pending_lock:
            if self._pending >= REDIS_MAX_PENDING:
                log.warning("rate limit store too slow (%d calls waiting); request allowed", self._pending)
                return
            self._pending += 1
        try:
            await asyncio.wrap_future(self._threads().submit(self.hit, endpoint, address))
        finally:
            with self._pending_lock:
                self._pending -= 1

    def close(self) -> None:
        """Let the limiter's threads end (calls in progress finish; each is bounded by the Redis timeout)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=REDIS_THREADS, thread_name_prefix="user-service-ratelimit")
        return self._executor
