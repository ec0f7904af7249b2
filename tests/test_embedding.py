"""user-service mounted inside a host FastAPI app, the host's routes protected by its tokens, the example host
app and operator script, and the interactive docs. Starlette never runs a mounted app's lifespan, so the clients
here are used without `with` unless a test is about the lifespan itself."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jwt
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount

import examples.host_app as example
import user_service
from tests.conftest import PASSWORD, TEST_SECRET, bearer, image_bytes
from tests.helpers import service_of
from user_service import Profile, Settings, create_app, require_user
from user_service.errors import ConfigurationError, UserNotFound
from user_service.service import UserService

REPO = Path(__file__).resolve().parents[1]
CREATE_USERS = REPO / "examples" / "create_users.sh"
VENV_BIN = Path(sys.executable).parent
NAMESPACE = example.NAMESPACE
ACCOUNT = {"namespace": NAMESPACE, "username": "alice", "password": PASSWORD}


def minimal_host(settings: Settings) -> FastAPI:
    """The least a host does: mount user-service and protect a route; it never runs user-service's lifespan."""
    accounts = create_app(settings)
    host = FastAPI()
    host.mount("/accounts", accounts)

    @host.get("/notes")
    def notes(user: Annotated[Profile, Depends(require_user(accounts))]) -> dict[str, Any]:
        return {"owner": user.username}

    return host


HOSTS: dict[str, Callable[[Settings], FastAPI]] = {"minimal": minimal_host, "example": example.build_app}


def accounts_of(host: FastAPI) -> FastAPI:
    """The user-service app mounted at /accounts."""
    mounted = [route.app for route in host.routes if isinstance(route, Mount) and route.path == "/accounts"]
    assert len(mounted) == 1
    accounts = mounted[0]
    assert isinstance(accounts, FastAPI)
    return accounts


@pytest.fixture(params=sorted(HOSTS))
def build_host(request: pytest.FixtureRequest) -> Callable[[Settings], FastAPI]:
    return HOSTS[request.param]


@pytest.fixture
def host(build_host: Callable[[Settings], FastAPI], settings: Settings) -> FastAPI:
    return build_host(settings)


@pytest.fixture
def web(host: FastAPI) -> Iterator[TestClient]:
    client = TestClient(host)
    yield client
    client.close()


def login(web: TestClient, **account: str) -> dict[str, Any]:
    """Register through the mount (unless the account exists) and log in; the token pair."""
    body = {**ACCOUNT, **account}
    try:
        service_of(accounts_of(web.app)).get_user(namespace=body["namespace"], username=body["username"])  # type: ignore[arg-type]
    except UserNotFound:
        created = web.post("/accounts/auth/register", json=body)
        assert created.status_code == 201, created.text
    response = web.post("/accounts/auth/login", json={key: body[key] for key in ("namespace", "username", "password")})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


# -- user-service under a mount -----------------------------------------------------------------------------------


def test_accounts_api_works_under_the_mount_without_its_lifespan(web: TestClient) -> None:
    created = web.post("/accounts/auth/register", json=ACCOUNT)
    assert created.status_code == 201, created.text
    assert created.json()["username"] == "alice"

    logged_in = web.post("/accounts/auth/login", json=ACCOUNT)
    assert logged_in.status_code == 200, logged_in.text
    pair = logged_in.json()
    me = web.get("/accounts/users/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.json()["id"] == created.json()["id"]

    refreshed = web.post("/accounts/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert web.get("/accounts/users/me", headers=bearer(refreshed.json()["access_token"])).status_code == 200

    health = web.get("/accounts/health")
    assert health.status_code == 200
    assert health.json()["database"] == "ok"
    assert web.post("/auth/register", json=ACCOUNT).status_code == 404


def test_errors_under_the_mount_keep_their_codes(web: TestClient) -> None:
    login(web)
    duplicate = web.post("/accounts/auth/register", json=ACCOUNT)
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "username_taken"
    wrong = web.post("/accounts/auth/login", json={**ACCOUNT, "password": "not the password"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_credentials"
    anonymous = web.get("/accounts/users/me")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    assert anonymous.headers["www-authenticate"] == "Bearer"


# -- the host's own route, protected by require_user ----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}, id="basic-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
    ],
)
def test_host_route_without_a_token_is_401(web: TestClient, headers: dict[str, str]) -> None:
    response = web.get("/notes", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in response.json()["detail"]


def _resign(token: str, key: str, **changes: Any) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode({**claims, **changes}, key, algorithm="HS256")


BAD_TOKENS: dict[str, tuple[Callable[[dict[str, Any]], str], str]] = {
    "garbage": (lambda pair: "not-a-jwt", "invalid_token"),
    "other-key": (lambda pair: _resign(pair["access_token"], "another-key-" + "x1y2z3" * 6), "invalid_token"),
    "refresh-token": (lambda pair: pair["refresh_token"], "invalid_token"),
    "alg-none": (
        lambda pair: jwt.encode(jwt.decode(pair["access_token"], options={"verify_signature": False}), None, "none"),
        "invalid_token",
    ),
    "expired": (
        lambda pair: _resign(pair["access_token"], TEST_SECRET, iat=1_000_000_000, exp=1_000_000_900),
        "token_expired",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_host_route_refuses_a_bad_token(
    build_host: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings], kind: str
) -> None:
    # HS256, whose tokens are re-signed by hand here; the key store's algorithms have tests of their own.
    web = TestClient(build_host(make_settings(jwt_algorithm="HS256")))
    make_token, code = BAD_TOKENS[kind]
    token = make_token(login(web))
    response = web.get("/notes", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer error="invalid_token", error_description="{code}"'


def test_host_route_names_the_caller(web: TestClient) -> None:
    alice = login(web)
    bob = login(web, username="Bob")
    for pair, name in ((alice, "alice"), (bob, "bob")):
        response = web.get("/notes", headers=bearer(pair["access_token"]))
        assert response.status_code == 200, response.text
        assert response.json()["owner"] == name


def test_host_route_refuses_a_disabled_user_at_once(web: TestClient, host: FastAPI) -> None:
    token = login(web)["access_token"]
    service = service_of(accounts_of(host))

    service.set_active(namespace=NAMESPACE, username="alice", active=False)
    refused = web.get("/notes", headers=bearer(token))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "This account is disabled."

    service.set_active(namespace=NAMESPACE, username="alice", active=True)
    # Disabling ended the session; enabling lets the user log in again but does not revive old tokens.
    assert web.get("/notes", headers=bearer(token)).status_code == 401
    assert web.get("/notes", headers=bearer(login(web)["access_token"])).status_code == 200


def test_host_route_refuses_a_deleted_user(web: TestClient, host: FastAPI) -> None:
    token = login(web)["access_token"]
    service_of(accounts_of(host)).delete_user(namespace=NAMESPACE, username="alice")
    assert web.get("/notes", headers=bearer(token)).status_code == 401


# -- avatars under a mount ------------------------------------------------------------------------------------


def test_avatar_url_under_the_mount_uses_public_base_url(
    build_host: Callable[[Settings], FastAPI], make_settings: Callable[..., Settings]
) -> None:
    base = "https://example.test/accounts"
    web = TestClient(build_host(make_settings(public_base_url=base + "/")))
    token = login(web)["access_token"]
    image = image_bytes("PNG")

    uploaded = web.post(
        "/accounts/users/me/avatar", headers=bearer(token), files={"file": ("me.png", image, "image/png")}
    )
    assert uploaded.status_code == 200, uploaded.text
    avatar_url = uploaded.json()["avatar_url"]
    assert avatar_url.startswith(base + "/uploads/")
    assert web.get("/accounts/users/me", headers=bearer(token)).json()["avatar_url"] == avatar_url

    # The URL's path, asked of the host, reaches the stored file through the mount.
    served = web.get(urlsplit(avatar_url).path)
    assert served.status_code == 200
    assert served.content == image
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"


# -- the example host app -------------------------------------------------------------------------------------


def test_example_host_runs_user_service_lifespan_inside_its_own(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert user_service.lifespan is example.lifespan
    host = example.build_app(settings)
    service = service_of(accounts_of(host))
    closed: list[bool] = []
    close = service.close
    monkeypatch.setattr(service, "close", lambda: closed.append(True) or close())

    with TestClient(host) as web:
        token = login(web)["access_token"]
        profile = web.get("/accounts/users/me", headers=bearer(token)).json()
        assert web.get("/notes", headers=bearer(token)).json() == {
            "owner_id": profile["id"],
            "owner": "alice",
            "notes": [],
        }
        assert closed == []
    assert closed == [True]


def test_example_app_reads_its_settings_from_the_environment(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for name, value in {
        "DATABASE_URL": db_url,
        "JWT_SECRET_KEY": TEST_SECRET,
        "BCRYPT_ROUNDS": "4",
        "UPLOAD_DIR": str(tmp_path / "uploads"),
    }.items():
        monkeypatch.setenv(name, value)

    with TestClient(example.app) as web:
        assert web.get("/notes").status_code == 401
        token = login(web)["access_token"]
        assert web.get("/notes", headers=bearer(token)).json()["owner"] == "alice"


def test_example_app_refuses_to_build_without_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY is not set"):
        example.app  # noqa: B018 (building the app is the point)


# -- the operator's script ------------------------------------------------------------------------------------

SCRIPT_USERS = {"alice": "alice@example.com", "bob": "bob@example.com", "carol": "carol@example.com"}


@pytest.fixture
def script_service(settings: Settings) -> Iterator[UserService]:
    """The core on the script's database, on the real clock: the script's tokens carry the real time."""
    service = UserService(settings)
    yield service
    service.close()


def run_script(*args: str, cwd: Path, settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **settings}
    return subprocess.run(
        ["bash", str(CREATE_USERS), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(params=["environment", "dotenv"])
def script_run(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Callable[..., Any]:
    """Runs the script from an empty folder, its settings in the environment or in the folder's .env."""
    workdir = tmp_path / "operator"
    workdir.mkdir()
    settings = {"DATABASE_URL": db_url, "JWT_SECRET_KEY": TEST_SECRET, "BCRYPT_ROUNDS": "4"}
    if request.param == "dotenv":
        (workdir / ".env").write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        settings = {}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_script(*args, cwd=workdir, settings=settings)

    return run


def test_create_users_script_creates_the_users_then_stops_on_a_duplicate_run(
    script_run: Callable[..., subprocess.CompletedProcess[str]], script_service: UserService
) -> None:
    result = script_run("Ops-Team")
    assert result.returncode == 0, result.stderr
    *credentials, token = result.stdout.splitlines()
    passwords = dict(line.split("\t") for line in credentials)
    assert set(passwords) == set(SCRIPT_USERS)
    for username, password in passwords.items():
        profile = script_service.get_user(namespace="ops-team", username=username)
        assert profile.email == SCRIPT_USERS[username]
        script_service.login(namespace="ops-team", username=username, password=password)
    assert script_service.authenticate(token).user.username == "alice"

    again = script_run("ops-team")
    assert again.returncode == 3
    assert "already taken" in again.stderr
    assert again.stdout == ""
    # The failed run changed nothing: the first run's password still works.
    script_service.login(namespace="ops-team", username="alice", password=passwords["alice"])


def test_create_users_script_needs_a_namespace(tmp_path: Path) -> None:
    result = run_script(cwd=tmp_path, settings={})
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- interactive docs and OpenAPI -----------------------------------------------------------------------------


@pytest.fixture(params=["standalone", "mounted"])
def docs(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[TestClient, str]:
    """A client and the prefix user-service answers under; the docs never touch the database."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        jwt_secret_key=TEST_SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )
    if request.param == "standalone":
        return TestClient(create_app(settings)), ""
    return TestClient(minimal_host(settings)), "/accounts"


def openapi(docs: tuple[TestClient, str]) -> dict[str, Any]:
    client, prefix = docs
    response = client.get(f"{prefix}/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}


def test_docs_page_loads_the_schema_it_is_served_with(docs: tuple[TestClient, str]) -> None:
    client, prefix = docs
    page = client.get(f"{prefix}/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f"url: '{prefix}/openapi.json'" in page.text
    assert '"persistAuthorization": true' in page.text
    # "Try it out" sends requests to the first server, which must be the mount point.
    assert openapi(docs).get("servers", [{"url": ""}])[0]["url"] == prefix


ENDPOINTS: dict[tuple[str, str], tuple[str | None, str, str | None]] = {
    # (method, path): (request model, success status, success model)
    ("post", "/auth/register"): ("RegisterRequest", "201", "Profile"),
    # (Its 200 is either model: see test_the_login_answer_is_a_token_pair_or_a_second_factor_challenge.)
    ("post", "/auth/login"): ("LoginRequest", "200", None),
    ("post", "/auth/login/mfa"): ("LoginMfaRequest", "200", "TokenPair"),
    ("post", "/users/me/mfa/totp"): (None, "200", "TotpEnrolment"),
    ("post", "/users/me/mfa/totp/confirm"): ("TotpConfirmRequest", "200", "RecoveryCodes"),
    ("delete", "/users/me/mfa/totp"): ("TotpRemoveRequest", "200", "Profile"),
    ("delete", "/admin/namespaces/{namespace}/users/{username}/mfa"): (None, "204", None),
    ("post", "/auth/refresh"): ("RefreshRequest", "200", "TokenPair"),
    ("get", "/users/me"): (None, "200", "Profile"),
    ("patch", "/users/me"): ("ProfilePatch", "200", "Profile"),
    ("post", "/users/me/avatar"): (None, "200", "Profile"),
    ("delete", "/users/me/avatar"): (None, "200", "Profile"),
    ("post", "/auth/logout"): ("LogoutRequest", "204", None),
    ("post", "/auth/logout-all"): (None, "204", None),
    ("post", "/users/me/password"): ("PasswordChangeRequest", "200", "TokenPair"),
    ("get", "/users/me/sessions"): (None, "200", None),
    ("delete", "/users/me/sessions/{session_id}"): (None, "204", None),
    ("get", "/uploads/{key}"): (None, "200", None),
    ("get", "/health"): (None, "200", "Health"),
    ("get", "/.well-known/jwks.json"): (None, "200", None),
    ("post", "/auth/password-reset"): ("PasswordResetRequest", "204", None),
    ("post", "/auth/verify-email"): ("VerifyEmailRequest", "200", "Profile"),
    ("get", "/admin/namespaces/{namespace}/users"): (None, "200", "UserPage"),
    ("post", "/admin/namespaces/{namespace}/users"): ("AdminUserCreate", "201", "Profile"),
    ("get", "/admin/namespaces/{namespace}/users/{username}"): (None, "200", "UserDetail"),
    ("patch", "/admin/namespaces/{namespace}/users/{username}"): ("AdminUserPatch", "200", "Profile"),
    ("delete", "/admin/namespaces/{namespace}/users/{username}"): (None, "204", None),
    ("get", "/admin/namespaces/{namespace}/users/{username}/sessions"): (None, "200", None),
    ("delete", "/admin/namespaces/{namespace}/users/{username}/sessions"): (None, "204", None),
    ("post", "/admin/namespaces/{namespace}/users/{username}/password-reset"): (None, "200", "OneTimeTokenOut"),
    ("post", "/admin/namespaces/{namespace}/users/{username}/email-verification"): (None, "200", "OneTimeTokenOut"),
}


def test_every_endpoint_is_listed_with_its_models(docs: tuple[TestClient, str]) -> None:
    paths = openapi(docs)["paths"]
    assert {(method, path) for path, operations in paths.items() for method in operations} == set(ENDPOINTS)
    for (method, path), (request_model, status, response_model) in ENDPOINTS.items():
        operation = paths[path][method]
        if request_model is not None:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            # Refresh and logout take no body in cookie mode: their body is the model or nothing.
            assert body == _ref(request_model) or _ref(request_model) in body.get("anyOf", []), body
        if response_model is not None:
            assert operation["responses"][status]["content"]["application/json"]["schema"] == _ref(response_model)
        assert operation.get("summary"), (method, path)


def test_the_login_answer_is_a_token_pair_or_a_second_factor_challenge(docs: tuple[TestClient, str]) -> None:
    schema = openapi(docs)["paths"]["/auth/login"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]

    assert schema["anyOf"] == [_ref("TokenPair"), _ref("MfaChallenge")]


def test_avatar_upload_is_documented_as_a_multipart_file(docs: tuple[TestClient, str]) -> None:
    schema = openapi(docs)
    body = schema["paths"]["/users/me/avatar"]["post"]["requestBody"]
    assert body["required"] is True
    form_ref = body["content"]["multipart/form-data"]["schema"]["$ref"]
    form = schema["components"]["schemas"][form_ref.rsplit("/", 1)[-1]]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["type"] == "string"


DOCUMENTED_ERRORS = [
    ("post", "/auth/register", "409", ("username_taken", "email_taken")),
    ("post", "/auth/register", "422", ()),
    ("post", "/auth/login", "401", ("invalid_credentials",)),
    ("post", "/auth/login", "403", ("user_disabled",)),
    ("post", "/auth/login", "429", ("too_many_attempts",)),
    ("post", "/auth/login", "422", ()),
    ("post", "/auth/refresh", "401", ("invalid_token", "token_expired", "refresh_token_reused")),
    ("get", "/users/me", "401", ("not_authenticated", "invalid_token", "token_expired")),
    ("get", "/users/me", "403", ("user_disabled",)),
    ("patch", "/users/me", "401", ("not_authenticated", "invalid_token", "token_expired")),
    ("patch", "/users/me", "409", ("email_taken",)),
    ("patch", "/users/me", "422", ()),
    ("post", "/users/me/avatar", "401", ("not_authenticated", "invalid_token", "token_expired")),
    ("post", "/users/me/avatar", "413", ("file_too_large",)),
    ("post", "/users/me/avatar", "415", ("unsupported_media_type",)),
    ("post", "/users/me/avatar", "422", ()),
    ("post", "/users/me/password", "401", ("invalid_credentials", "not_authenticated")),
    ("post", "/users/me/password", "422", ()),
    ("post", "/auth/logout-all", "401", ("not_authenticated", "invalid_token")),
    ("delete", "/users/me/sessions/{session_id}", "404", ("session_not_found",)),
    ("get", "/uploads/{key}", "404", ("not_found",)),
    ("get", "/health", "503", ()),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "codes"),
    DOCUMENTED_ERRORS,
    ids=[f"{method}-{path}-{status}" for method, path, status, _codes in DOCUMENTED_ERRORS],
)
def test_error_responses_are_documented_with_their_body_and_codes(
    docs: tuple[TestClient, str], method: str, path: str, status: str, codes: tuple[str, ...]
) -> None:
    documented = openapi(docs)["paths"][path][method]["responses"][status]
    expected_model = {"422": "UnprocessableBody", "503": "Health" if path == "/health" else "ErrorBody"}
    schema = documented.get("content", {}).get("application/json", {}).get("schema")
    if status in expected_model and (status == "422" or path == "/health"):
        assert schema == _ref(expected_model[status])
    else:
        # The project's error body, with `code` an enum of the codes this response can carry.
        assert schema["required"] == ["detail", "code"]
        assert set(codes) <= set(schema["properties"]["code"]["enum"])
    for code in codes:
        assert f"`{code}`" in documented["description"]


PROTECTED = [
    ("get", "/users/me"),
    ("patch", "/users/me"),
    ("post", "/users/me/avatar"),
    ("delete", "/users/me/avatar"),
    ("post", "/users/me/password"),
    ("get", "/users/me/sessions"),
    ("delete", "/users/me/sessions/{session_id}"),
    ("post", "/auth/logout-all"),
    ("post", "/users/me/mfa/totp"),
    ("post", "/users/me/mfa/totp/confirm"),
    ("delete", "/users/me/mfa/totp"),
]


def test_bearer_scheme_is_declared_on_the_protected_routes(docs: tuple[TestClient, str]) -> None:
    schema = openapi(docs)
    schemes = schema["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["type"] == "http"
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected = [{"HTTPBearer": []}] if (method, path) in PROTECTED else None
            if path.startswith("/admin/"):
                # The admin API takes admin keys, never users' tokens: a scheme of its own.
                expected = [{"AdminKey": []}]
            assert operation.get("security") == expected, (method, path)


def test_authorize_button_token_reaches_the_protected_routes(web: TestClient) -> None:
    """What Swagger UI does after Authorize: the declared scheme's header, sent to the declared server."""
    schema = web.get("/accounts/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["HTTPBearer"]
    server = schema["servers"][0]["url"]
    token = login(web)["access_token"]
    headers = {"Authorization": f"{scheme['scheme'].capitalize()} {token}"}
    assert web.get(server + "/users/me", headers=headers).json()["username"] == "alice"

    host_schema = web.get("/openapi.json").json()
    assert host_schema["paths"]["/notes"]["get"]["security"] == [{"HTTPBearer": []}]
    assert web.get("/notes", headers=headers).json()["owner"] == "alice"
