"""Prometheus metrics of one app: what the core and the HTTP door count, read back through the functions a host
app calls (`metrics_text`, `metrics_app`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import examples.host_app as example
from tests.conftest import PASSWORD, TEST_SECRET, WRONG, Api, FakeClock, bearer, image_bytes
from user_service import metrics_app, metrics_text
from user_service.api.app import create_app
from user_service.api.metrics import MAX_NAMESPACE_LABELS, Metrics
from user_service.config import Settings, load_settings
from user_service.errors import ConfigurationError


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in an exposition, 0 when absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


@dataclass
class Metered:
    api: Api
    app: FastAPI

    def value(self, name: str, **labels: str) -> float:
        return sample(metrics_text(self.app).decode(), name, **labels)

    def auth(self, event: str, outcome: str, **labels: str) -> float:
        return self.value("user_service_auth_events_total", event=event, outcome=outcome, **labels)


@pytest.fixture
def make_metered(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[Callable[..., Metered]]:
    clients: list[TestClient] = []

    def build(**overrides: Any) -> Metered:
        app = create_app(make_settings(**overrides), clock=clock, metrics=True)
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client.__enter__())
        return Metered(Api(client), app)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def metered(make_metered: Callable[..., Metered]) -> Metered:
    return make_metered()


def test_logins_are_counted_by_outcome(make_metered: Callable[..., Metered]) -> None:
    metered = make_metered(login_max_failures=2)
    api = metered.api
    api.created()
    api.logged_in()
    assert api.login(password=WRONG).status_code == 401
    assert api.login(username="nobody").status_code == 401
    assert api.login(password=WRONG).status_code == 401  # the second failure locks this client out
    assert api.login().status_code == 429

    assert metered.auth("register", "success") == 1
    assert metered.auth("login", "success") == 1
    assert metered.auth("login", "failure") == 3
    assert metered.auth("login", "locked") == 1
    assert metered.auth("lockout", "client") == 1
    # The account's hash, and the dummy hash that an unknown account's login is checked against.
    assert metered.value("user_service_password_hash_duration_seconds_count", operation="hash") == 2
    assert metered.value("user_service_password_hash_duration_seconds_count", operation="check") == 4
    assert metered.value("user_service_password_hashes_waiting") == 0


def test_refreshes_are_counted_by_outcome(metered: Metered, clock: FakeClock, settings: Settings) -> None:
    api = metered.api
    first = api.tokens()
    second = api.refresh(first["refresh_token"]).json()
    assert api.refresh(first["refresh_token"]).json()["code"] == "refresh_token_reused"
    assert api.refresh("not-a-token").status_code == 401
    later = api.logged_in()
    clock.advance(settings.refresh_token_ttl_seconds + 1)
    assert api.refresh(later["refresh_token"]).json()["code"] == "token_expired"

    assert second["refresh_token"]
    assert metered.auth("refresh", "success") == 1
    assert metered.auth("refresh", "reused") == 1
    assert metered.auth("refresh", "failure") == 1
    assert metered.auth("refresh", "expired") == 1


def test_sessions_started_and_ended_are_counted(metered: Metered) -> None:
    api = metered.api
    first = api.tokens()
    api.logged_in()
    third = api.logged_in()
    assert api.client.post("/auth/logout", json={"refresh_token": first["refresh_token"]}).status_code == 204
    assert api.client.post("/auth/logout-all", headers=bearer(third["access_token"])).status_code == 204

    assert metered.value("user_service_sessions_started_total") == 3
    assert metered.value("user_service_sessions_ended_total") == 3
    assert metered.auth("logout", "success") == 1
    assert metered.auth("logout_all", "success") == 1


def test_password_changes_are_counted(metered: Metered) -> None:
    pair = metered.api.tokens()
    body = {"current_password": PASSWORD, "new_password": "a different passphrase"}
    response = metered.api.client.post("/users/me/password", json=body, headers=bearer(pair["access_token"]))
    assert response.status_code == 200, response.text

    assert metered.auth("password_change", "success") == 1


def test_requests_are_counted_by_route_template_and_status_class(metered: Metered) -> None:
    api = metered.api
    pair = api.tokens()
    for _ in range(3):
        assert api.me(pair["access_token"]).status_code == 200
    assert api.me("nonsense").status_code == 401
    session = api.client.get("/users/me/sessions", headers=bearer(pair["access_token"])).json()[0]["id"]
    ended = api.client.delete(f"/users/me/sessions/{session}", headers=bearer(pair["access_token"]))
    assert ended.status_code == 204
    assert api.client.get("/no/such/path/123").status_code == 404
    assert api.client.request("BREW", "/users/me").status_code == 405

    requests = "user_service_http_requests_total"
    assert metered.value(requests, method="GET", route="/users/me", status="2xx") == 3
    assert metered.value(requests, method="GET", route="/users/me", status="4xx") == 1
    assert metered.value(requests, method="DELETE", route="/users/me/sessions/{session_id}", status="2xx") == 1
    assert metered.value(requests, method="GET", route="unmatched", status="4xx") == 1
    assert metered.value(requests, method="OTHER", route="/users/me", status="4xx") == 1
    durations = "user_service_http_request_duration_seconds_count"
    assert metered.value(durations, method="GET", route="/users/me") == 4


def test_a_body_refused_before_routing_is_counted_for_its_route(metered: Metered) -> None:
    response = metered.api.client.post("/auth/login", content=b"{" + b" " * 300_000 + b"}")
    assert response.status_code == 413

    assert metered.value("user_service_http_requests_total", method="POST", route="/auth/login", status="4xx") == 1


def test_rate_limit_refusals_are_counted(make_metered: Callable[..., Metered]) -> None:
    metered = make_metered(rate_limit_enabled=True, rate_limit="1/minute")
    metered.api.created()
    assert metered.api.register(username="bob").status_code == 429

    assert metered.value("user_service_rate_limit_refusals_total", route="/auth/register") == 1


def test_avatar_uploads_are_counted_by_outcome(make_metered: Callable[..., Metered]) -> None:
    metered = make_metered(avatar_max_bytes=1024)
    headers = bearer(metered.api.tokens()["access_token"])
    stored = metered.api.client.post(
        "/users/me/avatar", files={"file": ("a.png", image_bytes("PNG"), "image/png")}, headers=headers
    )
    refused = metered.api.client.post(
        "/users/me/avatar", files={"file": ("a.png", b"not an image at all", "image/png")}, headers=headers
    )
    too_large = metered.api.client.post(
        "/users/me/avatar", files={"file": ("a.png", b"x" * 40_000, "image/png")}, headers=headers
    )
    assert stored.status_code == 200, stored.text
    assert refused.status_code == 415, refused.text
    assert too_large.status_code == 413, too_large.text

    assert metered.value("user_service_avatar_uploads_total", outcome="stored") == 1
    assert metered.value("user_service_avatar_uploads_total", outcome="unsupported_media_type") == 1
    assert metered.value("user_service_avatar_uploads_total", outcome="file_too_large") == 1


def test_database_errors_and_unavailable_answers_are_counted(tmp_path: Path, clock: FakeClock) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'no-such-folder' / 'user-service.db'}",
        jwt_secret_key=TEST_SECRET,
        bcrypt_rounds=4,
        upload_dir=tmp_path / "uploads",
        rate_limit_enabled=False,
        _env_file=None,
    )
    app = create_app(settings, clock=clock, metrics=True)
    with TestClient(app) as client:
        account = {"namespace": "app-x", "username": "alice", "password": PASSWORD}
        assert client.post("/auth/login", json=account).json()["code"] == "database_unavailable"
        assert client.get("/health").status_code == 503
    text = metrics_text(app).decode()

    assert sample(text, "user_service_database_unavailable_responses_total", route="/auth/login") == 1
    assert sample(text, "user_service_database_unavailable_responses_total", route="/health") == 1
    assert sample(text, "user_service_database_errors_total", kind="connection") >= 2


def test_namespace_label_only_when_asked_and_only_for_accounts(make_metered: Callable[..., Metered]) -> None:
    metered = make_metered(metrics_namespace_label=True)
    metered.api.tokens()
    metered.api.login(namespace="made-up", username="nobody")

    assert metered.auth("login", "success", namespace="app-x") == 1
    # A namespace nobody has an account in is not a label value: a client could invent any number of them.
    assert metered.auth("login", "failure", namespace="") == 1
    assert metered.auth("login", "success") == 0


def test_namespace_labels_are_bounded() -> None:
    metrics = Metrics(namespace_label=True)
    for index in range(MAX_NAMESPACE_LABELS + 5):
        metrics.auth_event("login", "success", f"tenant-{index}")
    text = metrics.exposition().decode()

    assert sample(text, "user_service_auth_events_total", event="login", outcome="success", namespace="other") == 5
    assert sample(text, "user_service_auth_events_total", event="login", outcome="success", namespace="tenant-0") == 1


def test_metrics_app_serves_get_only(metered: Metered) -> None:
    metered.api.tokens()
    host = FastAPI()
    host.mount("/metrics", metrics_app(metered.app))
    with TestClient(host) as client:
        scraped = client.get("/metrics")
        refused = client.post("/metrics")

    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert sample(scraped.text, "user_service_auth_events_total", event="login", outcome="success") == 1
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"


def test_the_hosts_registry_stays_clean(metered: Metered) -> None:
    metered.api.tokens()

    assert sample(metrics_text(metered.app).decode(), "user_service_sessions_started_total") == 1
    global_names = {family.name for family in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("user_service") for name in global_names)


def test_nothing_is_counted_without_metrics(api: Api, app: FastAPI) -> None:
    api.tokens()

    assert app.state.metrics is None
    with pytest.raises(ValueError, match="metrics=True"):
        metrics_app(app)


def test_the_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    dashboard = json.loads((Path(__file__).resolve().parents[1] / "examples" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"user_service_[a-z_]+", target["expr"])
    }
    exposed = {
        sample.name for family in Metrics(namespace_label=False).registry.collect() for sample in family.samples
    } | {f"{family.name}_bucket" for family in Metrics().registry.collect() if family.type == "histogram"}
    families = {family.name for family in Metrics().registry.collect()}

    assert used
    assert all(name in exposed or name.removesuffix("_total") in families for name in used), used - exposed


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"METRICS_PORT": ""}, None),
        ({"METRICS_PORT": "9100", "METRICS_HOST": "::1"}, 9100),
        ({"METRICS_PORT": "9100", "METRICS_HOST": "localhost"}, 9100),
    ],
)
def test_metrics_settings_are_read(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], expected: int | None
) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    assert Settings(_env_file=None).metrics_port == expected  # type: ignore[call-arg]


@pytest.mark.parametrize(("name", "value"), [("METRICS_HOST", "metrics.example.com"), ("METRICS_PORT", "70000")])
def test_bad_metrics_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_the_example_host_serves_the_embedded_apps_metrics(settings: Settings) -> None:
    with TestClient(example.build_app(settings)) as web:
        account = {"namespace": example.NAMESPACE, "username": "alice", "password": PASSWORD}
        assert web.post("/accounts/auth/register", json=account).status_code == 201
        assert web.post("/accounts/auth/login", json=account).status_code == 200
        scraped = web.get("/metrics")

    assert scraped.status_code == 200
    assert sample(scraped.text, "user_service_auth_events_total", event="login", outcome="success") == 1
    requests = "user_service_http_requests_total"
    assert sample(scraped.text, requests, method="POST", route="/auth/login", status="2xx") == 1
