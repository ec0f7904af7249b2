"""No client input, however malformed, produces a 5xx; every error is JSON a client can branch on.

Each JSON endpoint gets malformed bodies, hostile strings in every string field, wrong types, oversized bodies and
wrong content types. A 422 from request validation carries FastAPI's list of problems; a 422 from the core (the
password policy, the extra-key limit) carries a sentence and a `code`, as every other error does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import PASSWORD, POSTGRES_ADMIN_URL, TEST_SECRET, FakeClock, TemplateDatabase, bearer, registration
from user_service import migrations
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.db import make_engine
from user_service.schemas import TokenPair
from user_service.service import UserService

REQUEST_MAX_BYTES = 262_144


def assert_handled(response: httpx.Response) -> None:
    """Not a server error, nosniff set, and any error in the documented JSON shape."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if response.status_code < 400:
        return
    body = response.json()
    if response.status_code == 422 and isinstance(body["detail"], list):
        assert body["detail"]
        for problem in body["detail"]:
            assert isinstance(problem["loc"], list)
            assert isinstance(problem["msg"], str)
            assert isinstance(problem["type"], str)
        return
    assert isinstance(body["detail"], str)
    assert isinstance(body["code"], str)
    assert body["code"]


def encode(body: Any) -> bytes:
    """JSON as UTF-8; lone surrogates cannot be UTF-8, so such a body travels with `\\uXXXX` escapes instead."""
    try:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body).encode("ascii")


@dataclass
class Endpoint:
    client: TestClient
    method: str
    path: str
    headers: dict[str, str]
    valid: dict[str, Any]
    success: int

    @property
    def fields(self) -> list[str]:
        return list(self.valid)

    def send(self, content: bytes | Iterator[bytes], content_type: str | None = "application/json") -> httpx.Response:
        headers = dict(self.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.client.request(self.method, self.path, content=content, headers=headers)

    def send_json(self, body: Any) -> httpx.Response:
        return self.send(encode(body))


ENDPOINTS = ["register", "login", "refresh", "patch_me"]


@pytest.fixture(scope="module")
def shared_database_url(database: TemplateDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for this module alone: a copy of the SQLite template, or a PostgreSQL database of its
    own (the per-test fixtures empty the shared PostgreSQL test database before every test)."""
    if database.kind == "sqlite":
        yield database.fresh(tmp_path_factory.mktemp("hostile"))
        return
    name = f"user_service_hostile_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(database.url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
        migrations.migrate_to(engine, "head")
        engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Shared:
    client: TestClient
    service: UserService

    def new_account(self) -> str:
        """A user of its own for each test, so no probe depends on what an earlier one did (lockouts, spent
        tokens, taken names)."""
        username = f"u-{uuid.uuid4().hex[:12]}"
        self.service.register(registration(namespace="app-x", username=username, password=PASSWORD))
        return username


@pytest.fixture(scope="module")
def shared(shared_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One running app per database for the whole module.

    Hundreds of probes here only check how one request is answered; a fresh app and database for each would
    multiply the run time without making any of them stronger. Every probe that needs an account gets its own.
    """
    with pytest.MonkeyPatch.context() as env:
        for name in Settings.model_fields:
            env.delenv(name.upper(), raising=False)
        settings = Settings(
            database_url=shared_database_url,
            jwt_secret_key=TEST_SECRET,
            bcrypt_rounds=4,
            upload_dir=tmp_path_factory.mktemp("hostile-uploads"),
            rate_limit_enabled=False,
            _env_file=None,
        )
    app = create_app(settings, clock=FakeClock())
    with TestClient(app) as client:
        yield Shared(client, app.state.service)


@pytest.fixture
def client(shared: Shared) -> TestClient:
    """In this module, `client` talks to the shared app (see `shared`)."""
    return shared.client


@pytest.fixture
def endpoint(request: pytest.FixtureRequest, shared: Shared) -> Endpoint:
    """One JSON endpoint with a body it accepts; login, refresh and PATCH get a real account behind them."""
    name = request.param
    client, service = shared.client, shared.service
    if name == "register":
        username = f"bob-{uuid.uuid4().hex[:12]}"
        valid = {
            "namespace": "app-x",
            "username": username,
            "password": PASSWORD,
            "email": f"{username}@example.com",
            "full_name": "Bob",
            "avatar_url": "https://img.example.com/bob.png",
            "extra": {"team": "blue"},
        }
        return Endpoint(client, "POST", "/auth/register", {}, valid, 201)
    username = shared.new_account()
    if name == "login":
        valid = {"namespace": "app-x", "username": username, "password": PASSWORD}
        return Endpoint(client, "POST", "/auth/login", {}, valid, 200)
    if name == "refresh":
        pair = service.issue_tokens(namespace="app-x", username=username)
        assert isinstance(pair, TokenPair)
        return Endpoint(client, "POST", "/auth/refresh", {}, {"refresh_token": pair.refresh_token}, 200)
    token = service.issue_tokens(namespace="app-x", username=username).access_token
    valid = {
        "email": f"{username}@example.com",
        "full_name": "Alice",
        "avatar_url": "https://img.example.com/alice.png",
        "extra": {"team": "red"},
    }
    return Endpoint(client, "PATCH", "/users/me", bearer(token), valid, 200)


every_endpoint = pytest.mark.parametrize("endpoint", ENDPOINTS, indirect=True)


@every_endpoint
def test_the_valid_body_is_accepted(endpoint: Endpoint) -> None:
    """The baseline the hostile variants start from: without it, a refusal below would prove nothing."""
    response = endpoint.send_json(endpoint.valid)

    assert response.status_code == endpoint.success, response.text
    assert_handled(response)


# -- malformed bodies ---------------------------------------------------------------------------------------------


def every_field(endpoint: Endpoint, literal: str) -> bytes:
    """A body that sets every field to a raw JSON literal (NaN and friends cannot come from json.dumps)."""
    return ("{" + ", ".join(f'"{field}": {literal}' for field in endpoint.fields) + "}").encode()


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


BODIES: dict[str, Callable[[Endpoint], bytes]] = {
    "empty": lambda e: b"",
    "invalid-json": lambda e: b"{this is not json}",
    "single-quotes": lambda e: encode(e.valid).replace(b'"', b"'"),
    "truncated": lambda e: encode(e.valid)[: len(encode(e.valid)) // 2],
    "trailing-garbage": lambda e: encode(e.valid) + b"}}garbage",
    "two-documents": lambda e: encode(e.valid) + encode(e.valid),
    "invalid-utf8": lambda e: b"\xff\xfe\xfd\xfc",
    "invalid-utf8-in-string": lambda e: b'{"' + e.fields[0].encode() + b'": "\xc3\x28\xa0\xa1"}',
    "overlong-utf8-slash": lambda e: b'{"' + e.fields[0].encode() + b'": "\xc0\xaf"}',
    "utf8-bom": lambda e: b"\xef\xbb\xbf" + encode(e.valid),
    "utf16": lambda e: json.dumps(e.valid).encode("utf-16"),
    "nan-in-extra": lambda e: encode(e.valid)[:-1] + b', "extra": {"k": NaN}}',
    "huge-integer": lambda e: every_field(e, "9" * 5000),
    "top-level-list": lambda e: encode([e.valid]),
    "top-level-string": lambda e: b'"hello"',
    "top-level-number": lambda e: b"42",
    "top-level-null": lambda e: b"null",
    "top-level-true": lambda e: b"true",
    "deep-arrays": lambda e: nested(100_000).encode(),
    "deep-objects": lambda e: ('{"a":' * 50_000 + "1" + "}" * 50_000).encode(),
    "deep-in-a-field": lambda e: ('{"' + e.fields[0] + '": ' + nested(50_000) + "}").encode(),
    "duplicate-keys": lambda e: encode(e.valid)[:-1] + b", " + encode(e.valid)[1:],
    "nul-bytes-raw": lambda e: b"\x00" * 64,
    "escaped-nul-key": lambda e: b'{"\\u0000": "x"}',
}


@every_endpoint
@pytest.mark.parametrize("kind", BODIES)
def test_malformed_body_is_a_client_error(endpoint: Endpoint, kind: str) -> None:
    response = endpoint.send(BODIES[kind](endpoint))

    assert_handled(response)


@every_endpoint
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_422_naming_each_field(endpoint: Endpoint, literal: str) -> None:
    response = endpoint.send(every_field(endpoint, literal))

    assert response.status_code == 422, response.text
    assert_handled(response)
    assert {tuple(problem["loc"][:2]) for problem in response.json()["detail"]} >= {
        ("body", field) for field in endpoint.fields
    }


WRONG_TYPES = [0, 1.5, True, [], ["x"], {"nested": "object"}]


@every_endpoint
@pytest.mark.parametrize("value", WRONG_TYPES, ids=[json.dumps(value) for value in WRONG_TYPES])
def test_wrong_field_types_are_422_for_every_field(endpoint: Endpoint, value: Any) -> None:
    # An object is a valid `extra`; every other field must refuse every non-string, never coerce it.
    body = {field: value for field in endpoint.fields if not (field == "extra" and isinstance(value, dict))}

    response = endpoint.send_json(body)

    assert response.status_code == 422, response.text
    assert_handled(response)
    assert {tuple(problem["loc"][:2]) for problem in response.json()["detail"]} >= {("body", field) for field in body}


# -- hostile strings in every string field ------------------------------------------------------------------------

# Where a hostile string goes: a top-level field, or the key or the value inside `extra`.
STRING_FIELDS = {
    "register": ["namespace", "username", "password", "email", "full_name", "avatar_url", "extra-key", "extra-value"],
    "login": ["namespace", "username", "password"],
    "refresh": ["refresh_token"],
    "patch_me": ["email", "full_name", "avatar_url", "extra-key", "extra-value"],
}


def insert(value: str, hostile: str) -> str:
    """Put the hostile text inside the value (after its first character), where a prefix check would miss it."""
    return value[:1] + hostile + value[1:]


MUTATIONS: dict[str, Callable[[str], str]] = {
    "nul": lambda value: insert(value, "\x00"),
    "lone-surrogates": lambda value: insert(value, "\ud800") + "\udfff",
    # An emoji joined by a zero-width joiner (four-byte UTF-8) and a right-to-left override.
    "emoji-and-bidi": lambda value: insert(value, "\U0001f600\u200d\U0001f525\u202e"),
    "very-long": lambda value: value + "x" * 100_000,
}
# Text that no database stores faithfully, or that is far over every limit, is never accepted.
ALWAYS_REFUSED = {"nul", "lone-surrogates", "very-long"}
# What login and refresh answer whatever a field holds: the account or the token is simply not found.
MISS = {"/auth/login": (401, "invalid_credentials"), "/auth/refresh": (401, "invalid_token")}


def mutated(valid: dict[str, Any], field: str, mutation: Callable[[str], str]) -> dict[str, Any]:
    body = json.loads(json.dumps(valid))
    if field == "extra-key":
        body["extra"] = {mutation("team"): "red"}
    elif field == "extra-value":
        body["extra"] = {"team": mutation("red")}
    else:
        body[field] = mutation(body[field])
    return body


HOSTILE_STRING_CASES = [
    pytest.param(name, field, kind, id=f"{name}-{field}-{kind}")
    for name, fields in STRING_FIELDS.items()
    for field in fields
    for kind in MUTATIONS
]


@pytest.mark.parametrize(("endpoint", "field", "kind"), HOSTILE_STRING_CASES, indirect=["endpoint"])
def test_hostile_string_in_a_field(endpoint: Endpoint, field: str, kind: str) -> None:
    body = mutated(endpoint.valid, field, MUTATIONS[kind])

    response = endpoint.send_json(body)

    assert_handled(response)
    if endpoint.path in MISS:
        assert (response.status_code, response.json()["code"]) == MISS[endpoint.path]
    if kind in ALWAYS_REFUSED:
        assert 400 <= response.status_code < 500, response.text
    if response.status_code == endpoint.success:
        # Accepted text must come back exactly as sent, not mangled by the database.
        profile = response.json()
        if field == "full_name":
            assert profile["full_name"] == body["full_name"]
        elif field.startswith("extra"):
            assert profile["extra"] == body["extra"]


# -- body size ----------------------------------------------------------------------------------------------------


def body_of_size(size: int) -> bytes:
    """A syntactically valid JSON object of exactly `size` bytes."""
    frame = b'{"padding": ""}'
    body = frame[:-2] + b"x" * (size - len(frame)) + frame[-2:]
    assert len(body) == size
    return body


@every_endpoint
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
def test_body_over_the_limit_is_413(endpoint: Endpoint, streamed: bool) -> None:
    body = body_of_size(REQUEST_MAX_BYTES + 1)
    content: bytes | Iterator[bytes] = iter([body[:65536], body[65536:]]) if streamed else body

    response = endpoint.send(content)

    assert response.status_code == 413, response.text[:300]
    assert response.json()["code"] == "request_too_large"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # Streamed means no declared length: the limit had to be enforced while the body was read.
    assert ("content-length" in response.request.headers) is not streamed


@every_endpoint
def test_body_of_exactly_the_limit_is_not_refused_for_its_size(endpoint: Endpoint) -> None:
    response = endpoint.send(body_of_size(REQUEST_MAX_BYTES))

    assert response.status_code == 422, response.text[:300]
    assert_handled(response)


# -- content types ------------------------------------------------------------------------------------------------

CONTENT_TYPES = [
    None,
    "text/plain",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=----x",
    "application/octet-stream",
    "application/json; charset=utf-16",
    "application/merge-patch+json",
    "*/*",
    ";;;",
    "application/json" + "; x=y" * 500,
]


@every_endpoint
@pytest.mark.parametrize("content_type", CONTENT_TYPES, ids=[str(value)[:40] for value in CONTENT_TYPES])
def test_any_content_type_is_handled(endpoint: Endpoint, content_type: str | None) -> None:
    response = endpoint.send(encode(endpoint.valid), content_type)

    assert_handled(response)


# -- routing, methods, headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/auth",
        "/auth/",
        "/auth/registerx",
        "/users",
        "/users/you",
        "/users/me/avatar/extra",
        "/uploads",
        "/uploads/",
        "/%00",
        "/users/%c0%af",
        "/%ff%fe",
        "/" + "a" * 10_000,
        "/..%2f..%2fetc%2fpasswd",
    ],
)
def test_unknown_route_is_404_not_found(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert_handled(response)


WRONG_METHODS = [
    ("GET", "/auth/register"),
    ("GET", "/auth/login"),
    ("PUT", "/auth/refresh"),
    ("DELETE", "/auth/login"),
    ("POST", "/users/me"),
    ("DELETE", "/users/me"),
    ("PUT", "/users/me"),
    ("GET", "/users/me/avatar"),
    ("PUT", "/users/me/avatar"),
    ("POST", "/health"),
    ("POST", "/uploads/0123456789abcdef0123456789abcdef.png"),
    ("DELETE", "/uploads/0123456789abcdef0123456789abcdef.png"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method_is_405_with_a_code(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "Allow" in response.headers
    assert_handled(response)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/users/me", {"GET", "PATCH"}),
        ("PUT", "/users/me", {"GET", "PATCH"}),
        ("GET", "/auth/login", {"POST"}),
        ("GET", "/users/me/avatar", {"POST", "DELETE"}),
    ],
)
def test_405_allow_header_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.request(method, path)

    assert response.status_code == 405
    assert {value.strip() for value in response.headers["Allow"].split(",")} == allowed


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        # No bearer credentials at all.
        (b"Bearer", "not_authenticated"),
        (b"Bearer ", "not_authenticated"),
        (b"Bearer  \t ", "not_authenticated"),
        (b"Basic YWxpY2U6cGFzc3dvcmQ=", "not_authenticated"),
        # Bearer credentials that are not a token of this service.
        (b"Bearer a.b.c", "invalid_token"),
        (b"Bearer ....", "invalid_token"),
        (b"Bearer \xff\xfe\xfd", "invalid_token"),
        (b"Bearer " + b"x" * 20_000, "invalid_token"),
        (b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "invalid_token"),
        (b"Bearer e30.e30.e30", "invalid_token"),
    ],
)
def test_hostile_authorization_header_is_401(client: TestClient, authorization: bytes, code: str) -> None:
    response = client.get("/users/me", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_handled(response)


def test_every_kind_of_response_carries_nosniff(shared: Shared) -> None:
    client, username = shared.client, shared.new_account()
    responses = [
        client.get("/health"),
        client.post("/auth/login", json={"namespace": "app-x", "username": username, "password": PASSWORD}),
        client.post("/auth/login", json={"namespace": "app-x", "username": username, "password": "wrong password"}),
        client.post("/auth/register", json={}),
        client.get("/users/me/", follow_redirects=False),
        client.get("/docs"),
        client.get("/openapi.json"),
        client.get("/nowhere"),
        client.post("/auth/register", content=body_of_size(REQUEST_MAX_BYTES + 1)),
    ]

    assert [response.status_code for response in responses] == [200, 200, 401, 422, 404, 200, 200, 404, 413]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
