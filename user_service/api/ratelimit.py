"""Per-client-address request limits (the `limits` library): in memory by default, in Redis when REDIS_URL is
set so that several instances share the counts."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse, storage, strategies

from user_service.config import Settings
from user_service.errors import RateLimited

log = logging.getLogger("user_service.api")
KEY_PREFIX = "user-service"


class AddressRateLimiter:
    """A sliding-window counter per (endpoint, client address): at most RATE_LIMIT requests per window."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.item: RateLimitItem = parse(settings.rate_limit)
        self.storage = storage.storage_from_string(settings.redis_url or "memory://")
        self.strategy = strategies.SlidingWindowCounterRateLimiter(self.storage)
        # Counting in this process's memory (or not at all) waits for nothing; counting in Redis is a round trip.
        self.blocks = self.enabled and settings.redis_url is not None

    def hit(self, endpoint: str, address: str | None) -> None:
        """Count one request; RateLimited (429 with Retry-After) once the address is over the limit."""
        if not self.enabled or address is None:
            return
        try:
            allowed = self.strategy.hit(self.item, KEY_PREFIX, endpoint, address)
            if allowed:
                return
            reset_at = self.strategy.get_window_stats(self.item, KEY_PREFIX, endpoint, address).reset_time
        except Exception as exc:  # the limiter's store is down: stay available; the account lockout still holds
            log.warning("rate limit store unavailable (%s); request allowed", type(exc).__name__)
            return
        raise RateLimited(math.ceil(max(reset_at - time.time(), 1)))
