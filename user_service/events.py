"""Security events as structured log lines, and the formatters that render them (text, or one JSON object a line).

An event names who and where (namespace, username or user id, session, client address), never a password, a token
or a hash: callers pass only those fields, and the formatters write nothing else of the record.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from user_service import telemetry

security_log = logging.getLogger("user_service.security")

# Record attributes that are not an event's fields (uvicorn adds `color_message`, the message with ANSI colours).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


# Events that suggest an attack in progress are warnings; the rest are the normal life of accounts.
WARNING_EVENTS = frozenset(
    {"lockout", "login_refused_locked", "refresh_reuse", "mfa_refused_locked", "mfa_code_reused"}
)


def security_event(event: str, **fields: object) -> None:
    """Log one security event with its fields (None values are left out)."""
    level = logging.WARNING if event in WARNING_EVENTS else logging.INFO
    values = {key: str(value) for key, value in fields.items() if value is not None}
    security_log.log(level, event, extra={"event": event, **values})
    telemetry.security_event(event, fields)


class RequestIdFilter(logging.Filter):
    """Adds the id of the request being served (`request_id`) to every record logged while serving it."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = telemetry.current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


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


# Characters that end a line or change a terminal in some viewer: C0 and C1 controls, DEL, the Unicode separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A value holding any of these is written quoted, so that it cannot pass for several fields.
_NEEDS_QUOTES = re.compile('[\\s="\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]')


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\u{ord(char):04x}")


def quote_value(value: object) -> str:
    """A field value as it goes into a text log line: as it is when plain, else quoted with `"` and `\\` escaped
    and every control character written as an escape, so one line can never look like two or gain fields."""
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(_escape_control, escaped) + '"'


class TextFormatter(logging.Formatter):
    """`time level logger message key=value ...`; values quoted when they need it, control characters escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A message can carry client text (uvicorn's access log writes the request path, decoded).
        return _CONTROL.sub(_escape_control, super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        # The fields go on the record's own line, before a traceback, not after its last line.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        extra = " ".join(f"{key}={quote_value(value)}" for key, value in _fields(record).items() if key != "event")
        if extra:
            line = f"{line} {extra}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for `serve`: our loggers and uvicorn's through one formatter on stderr."""
    formatter = "json" if log_format == "json" else "text"
    handler = {
        "class": "logging.StreamHandler",
        "formatter": formatter,
        "stream": "ext://sys.stderr",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "text": {"()": TextFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "user_service": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
