"""`user-service create-admin-key`, `admin-keys`, `revoke-admin-key`: checked through the admin API they open."""

from __future__ import annotations

import json

from tests.conftest import Api, Cli, bearer
from tests.helpers import one_line_error

USERS = "/admin/namespaces/app-x/users"


def test_a_new_key_is_printed_once_and_opens_the_admin_api(cli: Cli, web: Api) -> None:
    web.created()

    result = cli("create-admin-key", "--name", "billing")

    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("usk_")
    assert len(key) >= 4 + 43
    assert web.client.get(USERS, headers=bearer(key)).status_code == 200
    listed = cli("admin-keys", "--json")
    assert key not in listed.stdout


def test_admin_keys_lists_names_scopes_and_last_use(cli: Cli, web: Api) -> None:
    web.created()
    scoped = cli("create-admin-key", "--name", "app-x-backend", "--namespace", "App-X").stdout.strip()
    cli("create-admin-key", "--name", "ops")
    web.client.get(USERS, headers=bearer(scoped))

    rows = json.loads(cli("admin-keys", "--json").stdout)

    assert [(row["name"], row["namespace"]) for row in rows] == [("app-x-backend", "app-x"), ("ops", None)]
    assert rows[0]["last_used_at"] is not None
    assert rows[1]["last_used_at"] is None
    table = cli("admin-keys")
    assert table.exit_code == 0
    assert "app-x-backend" in table.stdout


def test_a_revoked_key_is_refused_at_once(cli: Cli, web: Api) -> None:
    web.created()
    key = cli("create-admin-key", "--name", "billing").stdout.strip()

    result = cli("revoke-admin-key", "billing")

    assert result.exit_code == 0, result.output
    response = web.client.get(USERS, headers=bearer(key))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert json.loads(cli("admin-keys", "--json").stdout)[0]["revoked_at"] is not None


def test_mistakes_are_one_line_errors(cli: Cli) -> None:
    cli("create-admin-key", "--name", "billing")

    assert "already exists" in one_line_error(cli("create-admin-key", "--name", "billing"), exit_code=3)
    assert "key name" in one_line_error(cli("create-admin-key", "--name", "no spaces"))
    assert "namespace" in one_line_error(cli("create-admin-key", "--name", "x", "--namespace", "bad_ns"))
    assert "billing2" in one_line_error(cli("revoke-admin-key", "billing2"), exit_code=4)
