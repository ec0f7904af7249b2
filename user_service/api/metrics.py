"""The service's Prometheus metrics, in a registry of their own (never the host's global one).

Under `serve --metrics-port` prometheus-client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `serve`
before anything imports it): every worker writes its figures to files there and the metrics listener adds them up.
Labels take few values: the route is the path template, the status a class (`2xx`), the method one of a fixed set.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "user_service_"
# Any other method (a client may send any word) is counted as OTHER.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# With METRICS_NAMESPACE_LABEL, the most namespaces one process gives a label of their own; the rest count as
# "other", so that accounts registered in ever new namespaces cannot grow the series without bound.
MAX_NAMESPACE_LABELS = 100
HASH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

__all__ = ["CONTENT_TYPE_LATEST", "MAX_NAMESPACE_LABELS", "Metrics"]


class Metrics:
    """Every metric of one app; it observes the core (see `user_service.telemetry.Observer`) and the HTTP door."""

    def __init__(self, *, namespace_label: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.namespace_label = namespace_label
        self._namespaces: set[str] = set()
        self._namespaces_lock = threading.Lock()
        registry = self.registry
        self.http_requests = Counter(
            PREFIX + "http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=registry
        )
        self.http_duration = Histogram(
            PREFIX + "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["method", "route"],
            registry=registry,
        )
        auth_labels = ["event", "outcome", "namespace"] if namespace_label else ["event", "outcome"]
        self.auth_events = Counter(
            PREFIX + "auth_events", "Authentication events by outcome.", auth_labels, registry=registry
        )
        self.hash_duration = Histogram(
            PREFIX + "password_hash_duration_seconds",
            "Time of one bcrypt computation (hash or check), once it has a core.",
            ["operation"],
            buckets=HASH_BUCKETS,
            registry=registry,
        )
        self.hashes_waiting_gauge = Gauge(
            PREFIX + "password_hashes_waiting",
            "bcrypt computations waiting for a core.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.rate_limited = Counter(
            PREFIX + "rate_limit_refusals",
            "Requests refused by the per-address rate limit.",
            ["route"],
            registry=registry,
        )
        self.database_errors = Counter(
            PREFIX + "database_errors", "Database errors by kind.", ["kind"], registry=registry
        )
        self.database_unavailable = Counter(
            PREFIX + "database_unavailable_responses",
            "Answers saying the database cannot be reached (503).",
            ["route"],
            registry=registry,
        )
        self.sessions_started_total = Counter(PREFIX + "sessions_started", "Sessions started.", registry=registry)
        self.sessions_ended_total = Counter(PREFIX + "sessions_ended", "Sessions ended.", registry=registry)
        self.avatar_uploads = Counter(
            PREFIX + "avatar_uploads", "Avatar uploads by outcome.", ["outcome"], registry=registry
        )
        # The children of the per-request metrics, looked up once per label set: `labels()` takes a lock each time.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        key = (method, route, status // 100)
        children = self._request_children.get(key)
        if children is None:
            label = method if method in _METHODS else "OTHER"
            status_class = _STATUS_CLASSES[key[2] - 1] if 1 <= key[2] <= 5 else "other"
            children = (
                self.http_requests.labels(label, route, status_class),
                self.http_duration.labels(label, route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def refused(self, code: str, route: str) -> None:
        """Count an answer given for the rate limit or the database being unreachable."""
        if code == "rate_limited":
            self.rate_limited.labels(route).inc()
        elif code == "database_unavailable":
            self.database_unavailable.labels(route).inc()

    def avatar_upload(self, outcome: str) -> None:
        self.avatar_uploads.labels(outcome).inc()

    # -- user_service.telemetry.Observer ---------------------------------------------------------------------

    def auth_event(self, event: str, outcome: str, namespace: str | None) -> None:
        if self.namespace_label:
            self.auth_events.labels(event, outcome, self._namespace(namespace)).inc()
        else:
            self.auth_events.labels(event, outcome).inc()

    def sessions_started(self, count: int) -> None:
        self.sessions_started_total.inc(count)

    def sessions_ended(self, count: int) -> None:
        self.sessions_ended_total.inc(count)

    def password_hashed(self, operation: str, seconds: float) -> None:
        self.hash_duration.labels(operation).observe(seconds)

    def hashes_waiting(self, change: int) -> None:
        self.hashes_waiting_gauge.inc(change)

    def database_error(self, kind: str) -> None:
        self.database_errors.labels(kind).inc()

    def _namespace(self, namespace: str | None) -> str:
        if namespace is None:
            return ""
        if namespace in self._namespaces:
            return namespace
        with self._namespaces_lock:
            if len(self._namespaces) >= MAX_NAMESPACE_LABELS:
                return "other"
            self._namespaces.add(namespace)
        return namespace

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (this process's figures)."""
        return generate_latest(self.registry)
