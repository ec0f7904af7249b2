"""What the core reports for metrics (auth outcomes, sessions, password hashing, database errors), and the request
id its log lines carry, without knowing any metrics library or HTTP.

The HTTP door sets both for the request it is serving, in context variables: they follow the request into the
worker threads that run the core (each thread hop copies the context), and they are gone with the request's task.
Outside a request (the CLI) nothing observes and nothing is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Protocol


class Observer(Protocol):
    """Receives what the core counts; the HTTP app's metrics implement it."""

    def auth_event(self, event: str, outcome: str, namespace: str | None) -> None: ...

    def sessions_started(self, count: int) -> None: ...

    def sessions_ended(self, count: int) -> None: ...

    def password_hashed(self, operation: str, seconds: float) -> None: ...

    def hashes_waiting(self, change: int) -> None: ...

    def database_error(self, kind: str) -> None: ...


current_observer: ContextVar[Observer | None] = ContextVar("user_service_observer", default=None)
current_request_id: ContextVar[str | None] = ContextVar("user_service_request_id", default=None)

# Security events as (event, outcome) of the auth-events counter; an event not listed counts as (event, "success").
_AUTH_OUTCOMES = {
    "login": ("login", "success"),
    "login_failed": ("login", "failure"),
    "login_refused_locked": ("login", "locked"),
    "refresh_reuse": ("refresh", "reused"),
    "password_changed": ("password_change", "success"),
    "mfa_passed": ("mfa", "success"),
    "mfa_failed": ("mfa", "failure"),
    "mfa_code_reused": ("mfa", "reused"),
    "mfa_refused_locked": ("mfa", "locked"),
}


def security_event(event: str, fields: Mapping[str, object]) -> None:
    """Count one security event. Its namespace is kept only when the event names an account (a failed login for an
    unknown account names whatever namespace the client typed)."""
    observer = current_observer.get()
    if observer is None:
        return
    if event == "lockout":
        name, outcome = "lockout", str(fields.get("scope", "account"))
    else:
        name, outcome = _AUTH_OUTCOMES.get(event, (event, "success"))
    namespace = fields.get("namespace") if fields.get("user_id") is not None else None
    observer.auth_event(name, outcome, None if namespace is None else str(namespace))


def auth_event(event: str, outcome: str, namespace: str | None = None) -> None:
    """Count an auth outcome that writes no security event (a refresh that succeeds, expires or fails)."""
    observer = current_observer.get()
    if observer is not None:
        observer.auth_event(event, outcome, namespace)


def sessions_started(count: int = 1) -> None:
    observer = current_observer.get()
    if observer is not None and count:
        observer.sessions_started(count)


def sessions_ended(count: int) -> None:
    observer = current_observer.get()
    if observer is not None and count:
        observer.sessions_ended(count)


def password_hashed(operation: str, seconds: float) -> None:
    observer = current_observer.get()
    if observer is not None:
        observer.password_hashed(operation, seconds)


def hashes_waiting(change: int) -> None:
    observer = current_observer.get()
    if observer is not None:
        observer.hashes_waiting(change)


def database_error(kind: str) -> None:
    observer = current_observer.get()
    if observer is not None:
        observer.database_error(kind)
