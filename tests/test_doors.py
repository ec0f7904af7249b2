"""One core, three doors: every rule gives the same code over HTTP, from the CLI and through the library; the codes
are one catalogue that the README lists; operator commands open the core the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, Api, Cli, bearer, registration
from user_service.config import Settings
from user_service.errors import ErrorCode, InvalidInput
from user_service.service import UserService

README = Path(__file__).resolve().parents[1] / "README.md"
TOO_MANY_EXTRA = {f"key{index}": "value" for index in range(51)}


def readme_error_codes() -> set[str]:
    """The codes in the second column of the README's error table."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("### Errors") : text.index("### Tokens")]
    codes: set[str] = set()
    for line in table.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 3:
            codes.update(re.findall(r"`([a-z_]+)`", cells[2]))
    return codes


def test_the_readme_error_table_lists_exactly_the_catalogue() -> None:
    assert readme_error_codes() == {code.value for code in ErrorCode}


def test_the_extra_limit_has_one_code_at_registration_over_http(api: Api) -> None:
    response = api.register(extra=TOO_MANY_EXTRA)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "too_many_extra_keys"
    assert api.login().status_code == 401


def test_the_extra_limit_has_one_code_after_a_merge_patch(api: Api) -> None:
    token = api.tokens(extra={f"old{index}": "v" for index in range(50)})["access_token"]

    response = api.client.patch("/users/me", json={"extra": {"one-more": "v"}}, headers=bearer(token))

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "too_many_extra_keys"
    assert len(api.me(token).json()["extra"]) == 50


def test_the_extra_limit_has_one_code_through_the_library(service: UserService) -> None:
    with pytest.raises(InvalidInput) as refused:
        service.register(registration(namespace="app-x", username="alice", password=PASSWORD, extra=TOO_MANY_EXTRA))

    assert refused.value.code == "too_many_extra_keys"
    assert "at most 50 keys" in refused.value.message


def test_the_extra_limit_is_refused_by_the_cli_in_words(cli: Cli) -> None:
    pairs = [f"--extra=key{index}=v" for index in range(51)]

    result = cli("create-user", "app-x", "alice", "--password-stdin", *pairs, input=PASSWORD + "\n")

    assert result.exit_code == 1
    assert "extra may hold at most 50 keys" in result.stderr
    assert "Traceback" not in result.output


def test_a_password_holding_the_email_has_its_own_code_over_http_and_in_the_library(
    api: Api, service: UserService
) -> None:
    fields = {"email": "kestrel.flight@example.com", "password": "my kestrel.flight pw"}

    response = api.register(**fields)
    with pytest.raises(InvalidInput) as refused:
        service.register(registration(namespace="app-x", username="bob", **fields))

    assert response.status_code == 422
    assert response.json()["code"] == refused.value.code == "password_contains_email"


def test_validation_errors_are_bounded_and_counted() -> None:
    with pytest.raises(InvalidInput) as refused:
        registration(namespace="app-x", username="alice", password=PASSWORD, **{f"f{n}": 1 for n in range(30)})

    message = refused.value.message
    assert message.count("Extra inputs are not permitted") == 10
    assert message.endswith("and 20 more problems")


def test_an_operator_command_checks_the_schema_before_asking_for_a_password(cli: Cli, tmp_path: Path) -> None:
    result = cli("create-user", "app-x", "alice", "--database-url", f"sqlite:///{tmp_path / 'fresh.db'}")

    assert result.exit_code == 1
    assert "Password" not in result.output
    assert "run `user-service migrate`" in result.stderr
    assert not (tmp_path / "fresh.db").exists()


def test_the_service_closes_its_connections_when_used_as_a_context_manager(settings: Settings) -> None:
    with UserService(settings) as service:
        assert service.database_ok()
        assert service.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    assert service.engine.pool.checkedin() == 0  # type: ignore[attr-defined]


def test_list_settings_are_parsed_once_at_load() -> None:
    settings = Settings(trusted_proxies="10.0.0.0/8, ::1", cors_origins="https://app.example/", _env_file=None)  # type: ignore[call-arg]

    assert [str(network) for network in settings.trusted_proxy_networks] == ["10.0.0.0/8", "::1/128"]
    assert settings.trusted_proxy_networks is settings.trusted_proxy_networks
    assert settings.cors_origin_list == ["https://app.example"]
