"""The OpenAPI schema says what the server enforces: every documented limit of a registration is the server's
(the largest documented value is accepted, one more is refused), and the name patterns accept what the server does."""

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD


def register_schema(client: TestClient) -> dict[str, Any]:
    schema: dict[str, Any] = client.get("/openapi.json").json()["components"]["schemas"]["RegisterRequest"]
    return schema


def extra_schema(client: TestClient) -> dict[str, Any]:
    (documented,) = [item for item in register_schema(client)["properties"]["extra"]["anyOf"] if item["type"] != "null"]
    assert documented["type"] == "object"
    return documented


@pytest.mark.parametrize("field", ["namespace", "username"])
def test_name_patterns_accept_what_the_server_accepts(client: TestClient, field: str) -> None:
    pattern = register_schema(client)["properties"][field]["pattern"]
    body = {"namespace": "App-X", "username": "Alice", "password": PASSWORD}

    assert re.fullmatch(pattern, body[field])
    response = client.post("/auth/register", json=body)
    assert response.status_code == 201, response.text
    assert response.json()[field] == body[field].lower()


@pytest.mark.parametrize("field", ["namespace", "username"])
def test_name_max_length_is_the_servers(client: TestClient, field: str) -> None:
    limit = register_schema(client)["properties"][field]["maxLength"]
    at_limit = {"namespace": "app-x", "username": "alice", "password": PASSWORD, field: "a" * limit}
    over = {**at_limit, field: "b" * (limit + 1)}

    assert client.post("/auth/register", json=at_limit).status_code == 201
    assert client.post("/auth/register", json=over).status_code == 422


def test_extra_limits_are_the_servers(client: TestClient) -> None:
    documented = extra_schema(client)
    keys, key_length = documented["maxProperties"], documented["propertyNames"]["maxLength"]
    value_length = documented["additionalProperties"]["maxLength"]
    assert "maxLength" not in {key for key in documented if key != "propertyNames"}

    def register(username: str, extra: dict[str, str]) -> int:
        body = {"namespace": "app-x", "username": username, "password": PASSWORD, "extra": extra}
        return client.post("/auth/register", json=body).status_code

    assert register("a1", {f"k{i}": "v" for i in range(keys)}) == 201
    assert register("a2", {f"k{i}": "v" for i in range(keys + 1)}) == 422
    assert register("a3", {"k" * key_length: "v"}) == 201
    assert register("a4", {"k" * (key_length + 1): "v"}) == 422
    assert register("a5", {"k": "v" * value_length}) == 201
    assert register("a6", {"k": "v" * (value_length + 1)}) == 422
