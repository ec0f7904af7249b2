"""Security events as structured log lines, and the formatters that render them (text, or one JSON object a line).

An event names who and where (namespace, username or user id, session, client address), never a password, a token
or a hash: callers pass only those fields, and the formatters write nothing else of the record.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

security_log = logging.getLogger("user_service.security")

# Record attributes that are not an event's fields (uvicorn adds `color_message`, the message with ANSI colours).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


# Events that suggest an attack in progress are warnings; the rest are the normal life of accounts.
WARNING_EVENTS = frozenset({"lockout", "login_refused_locked", "refresh_reuse"})


def security_event(event: str, **fields: object) -> None:
    """Log one security event with its fields (None values are left out)."""
    level = logging.WARNING if event in WARNING_EVENTS else logging.INFO
    values = {key: str(value) for key, value in fields.items() if value is not None}
    security_log.log(level, event, extra={"event": event, **values})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger message key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{key}={value}" for key, value in _fields(record).items() if key != "event")
        return f"{line} {extra}" if extra else line


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for `serve`: our loggers and uvicorn's through one formatter on stderr."""
    formatter = "json" if log_format == "json" else "text"
    handler = {"class": "logging.StreamHandler", "formatter": formatter, "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}, "text": {"()": TextFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "user_service": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
