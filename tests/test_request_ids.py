"""Request ids: kept from X-Request-ID when sane, made otherwise, echoed in every response and carried by every log
line of the request (security events and the access log, text and JSON); ACCESS_LOG switches the access log."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import WRONG, Api, MakeApi, MakeClient
from user_service.api.request_context import request_id_of
from user_service.events import JsonFormatter, RequestIdFilter, TextFormatter, logging_config

GENERATED = re.compile(r"[0-9a-f]{32}")
Capture = Callable[[str], io.StringIO]


@pytest.fixture
def capture_logs() -> Iterator[Capture]:
    """The service's log lines, formatted as `serve` formats them (its handler's formatter and filter)."""
    logger = logging.getLogger("user_service")
    added: list[logging.Handler] = []
    level = logger.level

    def capture(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
        handler.addFilter(RequestIdFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        added.append(handler)
        return stream

    yield capture
    for handler in added:
        logger.removeHandler(handler)
    logger.setLevel(level)


def lines_with(stream: io.StringIO, text: str) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if text in line]


def test_serve_logging_adds_the_request_id_filter() -> None:
    config = logging_config("text", "INFO")

    assert config["handlers"]["default"]["filters"] == ["request_id"]
    assert config["filters"]["request_id"]["()"] is RequestIdFilter


def test_a_sane_request_id_is_kept_and_echoed(api: Api) -> None:
    response = api.client.get("/health", headers={"X-Request-ID": "req-0123.abc:9_Z"})

    assert response.headers["x-request-id"] == "req-0123.abc:9_Z"


def test_without_a_request_id_a_new_one_is_made_for_each_request(api: Api) -> None:
    first = api.client.get("/health").headers["x-request-id"]
    second = api.client.get("/health").headers["x-request-id"]

    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "hostile",
    [b"abc\ndef", b"abc\r\nX-Injected: 1", b"a" * 10_240, "r\u00e9quest".encode(), b"two words", b"", b"a=b", b"\x00"],
)
def test_a_hostile_request_id_is_replaced(hostile: bytes) -> None:
    made = request_id_of([(b"x-request-id", hostile)])

    assert GENERATED.fullmatch(made)


@pytest.mark.parametrize("hostile", [b"x" * 10_240, "caf\u00e9".encode(), b"a b c", b"id=forged request_id=x"])
def test_a_hostile_request_id_never_reaches_a_log_line(api: Api, capture_logs: Capture, hostile: bytes) -> None:
    stream = capture_logs("text")
    response = api.client.post(
        "/auth/login",
        json={"namespace": "app-x", "username": "nobody", "password": WRONG},
        headers={"X-Request-ID": hostile},
    )

    made = response.headers["x-request-id"]
    assert GENERATED.fullmatch(made)
    logged = stream.getvalue()
    assert hostile.decode("latin-1") not in logged
    assert f"request_id={made}" in lines_with(stream, "login_failed")[0]


def test_every_log_line_of_a_request_carries_its_id_in_text(api: Api, capture_logs: Capture) -> None:
    stream = capture_logs("text")
    api.created()
    response = api.client.post(
        "/auth/login",
        json={"namespace": "app-x", "username": "alice", "password": WRONG},
        headers={"X-Request-ID": "trace-7"},
    )

    assert response.status_code == 401
    assert response.headers["x-request-id"] == "trace-7"
    request_lines = [line for line in stream.getvalue().splitlines() if "trace-7" in line]
    assert len(request_lines) == 2
    assert " user_service.security login_failed " in request_lines[0]
    assert " user_service.access request " in request_lines[1]
    assert all(line.endswith("request_id=trace-7") for line in request_lines)


def test_the_json_access_log_names_the_request(make_api: MakeApi, capture_logs: Capture) -> None:
    stream = capture_logs("json")
    api = make_api(trusted_proxies="10.0.0.0/8", peer="10.0.0.2")
    response = api.client.get(
        "/users/me", headers={"X-Request-ID": "trace-8", "X-Forwarded-For": "198.51.100.7, 10.0.0.5"}
    )

    assert response.status_code == 401
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [entry for entry in entries if entry["logger"] == "user_service.access"]
    assert len(access) == 1
    entry: dict[str, Any] = access[0]
    assert entry["method"] == "GET"
    assert entry["path"] == "/users/me"
    assert entry["status"] == 401
    assert entry["client"] == "198.51.100.7"
    assert entry["request_id"] == "trace-8"
    assert entry["duration_ms"] >= 0


def test_a_path_with_line_breaks_stays_on_one_access_line(api: Api, capture_logs: Capture) -> None:
    stream = capture_logs("text")
    api.client.get("/users/%0Aforged%20INFO%20user_service.security%20login", headers={"X-Request-ID": "trace-9"})

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert 'path="/users/\\nforged INFO user_service.security login"' in lines[0]


def test_access_log_false_leaves_security_events(make_api: MakeApi, capture_logs: Capture) -> None:
    stream = capture_logs("text")
    make_api().created()
    make_api(access_log=False).created(username="bob")

    access = lines_with(stream, "user_service.access")
    assert len(access) == 1
    assert "path=/auth/register status=201" in access[0]
    assert len(lines_with(stream, "user_service.security register")) == 2


def test_error_answers_carry_the_request_id(make_api: MakeApi) -> None:
    api = make_api(raise_server_exceptions=False)

    def boom() -> None:
        raise RuntimeError("unexpected")

    api.client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    headers = {"X-Request-ID": "trace-10"}
    answers = [
        api.client.get("/users/me", headers=headers),
        api.client.get("/no/such/path", headers=headers),
        api.client.post("/auth/login", content=b"{" + b" " * 300_000 + b"}", headers=headers),
        api.client.get("/boom", headers=headers),
    ]

    assert [answer.status_code for answer in answers] == [401, 404, 413, 500]
    assert all(answer.headers["x-request-id"] == "trace-10" for answer in answers)
    assert all("code" in answer.json() for answer in answers)


def test_the_unhandled_error_line_carries_the_request_id(
    make_api: MakeApi, capture_logs: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    stream = capture_logs("text")
    api = make_api(raise_server_exceptions=False)

    def boom() -> None:
        raise RuntimeError("unexpected")

    api.client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR):
        api.client.get("/boom", headers={"X-Request-ID": "trace-11"})

    assert "request_id=trace-11" in lines_with(stream, "unhandled error")[0]


def test_a_browser_origin_may_send_and_read_the_request_id(make_client: MakeClient) -> None:
    client = make_client(cors_origins="https://app.example.com")
    origin = {"Origin": "https://app.example.com"}
    preflight = client.options(
        "/users/me",
        headers={**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-request-id"},
    )
    answer = client.get("/users/me", headers={**origin, "X-Request-ID": "trace-12"})

    assert preflight.status_code == 200, preflight.text
    assert "x-request-id" in preflight.headers["access-control-allow-headers"].lower()
    assert answer.headers["x-request-id"] == "trace-12"
    exposed = [name.strip() for name in answer.headers["access-control-expose-headers"].lower().split(",")]
    assert "x-request-id" in exposed
