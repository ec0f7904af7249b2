"""Tenant isolation for hosts (ASVS 5.0 8.2.2, 8.4.1): a host accepts only its own namespaces' tokens, and operators
can close self-service registration, since anyone may otherwise hold an account in any namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import examples.host_app as example
from tests.conftest import PASSWORD, Cli, MakeApi, bearer
from user_service import Profile, Settings, create_app, require_user
from user_service.config import load_settings
from user_service.errors import ConfigurationError


def host_with(settings: Settings, **protection: Any) -> FastAPI:
    accounts = create_app(settings)
    host = FastAPI()
    host.mount("/accounts", accounts)
    host.state.accounts = accounts

    caller = Depends(require_user(accounts, **protection))

    @host.get("/whoami")
    def whoami(user: Profile = caller) -> dict[str, str]:
        return {"id": str(user.id), "namespace": user.namespace}

    return host


@pytest.fixture
def make_host(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    with ExitStack() as stack:

        def build(**protection: Any) -> TestClient:
            host = host_with(settings, **protection)
            # The host closes user-service's connections when it stops, as examples/host_app.py does.
            stack.callback(host.state.accounts.state.service.close)
            return stack.enter_context(TestClient(host))

        yield build


def token_for(web: TestClient, namespace: str, username: str = "owner") -> str:
    body = {"namespace": namespace, "username": username, "password": PASSWORD}
    assert web.post("/accounts/auth/register", json=body).status_code == 201
    response = web.post("/accounts/auth/login", json=body)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_a_token_of_another_namespace_does_not_pass_for_the_hosts_user(make_host: Callable[..., TestClient]) -> None:
    web = make_host(namespace="notes-app")
    own = token_for(web, "notes-app")
    foreign = token_for(web, "evil-tenant")

    refused = web.get("/whoami", headers=bearer(foreign))

    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["detail"] == "The token belongs to another namespace."
    assert web.get("/whoami", headers=bearer(own)).json()["namespace"] == "notes-app"


def test_a_host_may_serve_several_namespaces(make_host: Callable[..., TestClient]) -> None:
    web = make_host(namespace=["Notes-App", "billing"])

    answers = [web.get("/whoami", headers=bearer(token_for(web, ns))).status_code for ns in ("notes-app", "billing")]

    assert answers == [200, 200]
    assert web.get("/whoami", headers=bearer(token_for(web, "other"))).status_code == 401


def test_without_a_namespace_every_tenant_passes(make_host: Callable[..., TestClient]) -> None:
    web = make_host()

    assert web.get("/whoami", headers=bearer(token_for(web, "evil-tenant"))).status_code == 200


def test_an_empty_namespace_list_is_a_mistake(settings: Settings) -> None:
    with pytest.raises(ValueError, match="at least one namespace"):
        host_with(settings, namespace=[])


def test_the_example_host_refuses_a_same_named_user_of_another_namespace(settings: Settings) -> None:
    with TestClient(example.build_app(settings)) as web:
        foreign = token_for(web, "evil-tenant", "alice")
        own = token_for(web, example.NAMESPACE, "alice")

        assert web.get("/notes", headers=bearer(foreign)).status_code == 401
        notes = web.get("/notes", headers=bearer(own)).json()
        me = web.get("/accounts/users/me", headers=bearer(own)).json()
    assert notes["owner_id"] == me["id"]


def test_registration_can_be_limited_to_some_namespaces(make_api: MakeApi) -> None:
    api = make_api(registration_namespaces="notes-app, Billing")

    closed = api.register(namespace="evil-tenant")

    assert closed.status_code == 403
    assert closed.json()["code"] == "registration_closed"
    assert api.register(namespace="billing").status_code == 201
    assert api.register(namespace="notes-app").status_code == 201


def test_registration_can_be_closed_with_operators_creating_accounts(make_api: MakeApi, cli: Cli) -> None:
    api = make_api(registration_enabled=False)
    cli.env["REGISTRATION_ENABLED"] = "false"

    closed = api.register()
    created = cli("create-user", "app-x", "alice", "--password-stdin", input=PASSWORD + "\n")

    assert closed.status_code == 403
    assert closed.json()["code"] == "registration_closed"
    assert created.exit_code == 0, created.output
    assert api.login().status_code == 200


def test_an_invalid_registration_namespace_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRATION_NAMESPACES", "notes-app, not a namespace")

    with pytest.raises(ConfigurationError, match="REGISTRATION_NAMESPACES: 'not a namespace' is not a namespace"):
        load_settings(None)
