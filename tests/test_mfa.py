"""The TOTP second factor: enrolment, confirmation, recovery codes, the two-step login, removal, operators' reset,
MFA_REQUIRED_NAMESPACES, and the amr/aal claims required by require_user and the downstream verifier.

Codes are computed with pyotp from the returned secret at the test clock; time moves by the clock, never by sleeping.
Races are in tests/security/test_mfa_races.py.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import jwt
import pyotp
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import PASSWORD, WRONG, Api, Cli, FakeClock, MakeApi, bearer
from tests.helpers import assert_error, assert_refused, service_of
from user_service.api.app import create_app
from user_service.api.host import require_user
from user_service.config import Settings
from user_service.schemas import Profile
from user_service.verify import MfaRequired, TokenRejected, TokenVerifier

TOTP_URL = "/users/me/mfa/totp"


@dataclass
class Enrolled:
    """A user with a confirmed factor: the session that confirmed it, the secret and the recovery codes."""

    access_token: str
    refresh_token: str
    secret: str
    recovery_codes: list[str]


def code(secret: str, clock: FakeClock, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.now, counter_offset=steps)


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def start_enrolment(api: Api, token: str) -> dict[str, Any]:
    response = api.client.post(TOTP_URL, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def confirm(api: Api, token: str, value: str) -> Any:
    return api.client.post(f"{TOTP_URL}/confirm", json={"code": value}, headers=bearer(token))


def enrolled(api: Api, clock: FakeClock, **fields: Any) -> Enrolled:
    """Register, log in, enrol and confirm; the clock then moves to the next step, so a fresh code is usable."""
    pair = api.tokens(**fields)
    secret = start_enrolment(api, pair["access_token"])["secret"]
    response = confirm(api, pair["access_token"], code(secret, clock))
    assert response.status_code == 200, response.text
    clock.advance(30)
    return Enrolled(pair["access_token"], pair["refresh_token"], secret, response.json()["recovery_codes"])


def challenge(api: Api, **fields: Any) -> str:
    response = api.login(**fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is True
    assert body["expires_in"] == 300
    assert "access_token" not in body and "refresh_token" not in body
    token: str = body["mfa_token"]
    return token


def second_step(api: Api, mfa_token: str, value: str) -> Any:
    return api.client.post("/auth/login/mfa", json={"mfa_token": mfa_token, "code": value})


def state(api: Api) -> dict[str, Any]:
    """What a refusal must leave as it was: the factor and its codes, and the sessions."""
    service = service_of(api)
    detail = service.user_detail(namespace="app-x", username="alice")
    with service.engine.connect() as connection:
        factor = connection.exec_driver_sql("SELECT confirmed_at, last_used_step FROM mfa_factors").all()
        codes = connection.exec_driver_sql("SELECT code_hash, used_at FROM mfa_recovery_codes").all()
    return {"mfa": detail.mfa_enabled, "sessions": detail.live_sessions, "factor": factor, "codes": sorted(codes)}


# -- enrolment ------------------------------------------------------------------------------------------------------


def test_enrolment_gives_a_secret_its_uri_and_a_qr_code_pending_until_confirmed(api: Api, clock: FakeClock) -> None:
    token = api.tokens()["access_token"]

    body = start_enrolment(api, token)

    assert set(body) == {"secret", "uri", "qr_png"}
    uri = urlparse(body["uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == "/user-service:app-x/alice"
    query = parse_qs(uri.query)
    assert query["secret"] == [body["secret"]]
    assert query["issuer"] == ["user-service"]
    assert pyotp.parse_uri(body["uri"]).secret == body["secret"]
    image = Image.open(io.BytesIO(base64.b64decode(body["qr_png"])))
    assert image.format == "PNG"
    assert image.size[0] > 50
    assert api.me(token).json()["mfa_enabled"] is False

    response = confirm(api, token, code(body["secret"], clock))

    assert response.status_code == 200, response.text
    recovery = response.json()["recovery_codes"]
    assert len(recovery) == len(set(recovery)) == 10
    assert api.me(token).json()["mfa_enabled"] is True


def test_the_issuer_is_a_setting(make_api: MakeApi) -> None:
    api = make_api(mfa_issuer="Acme Notes")
    token = api.tokens()["access_token"]

    assert pyotp.parse_uri(start_enrolment(api, token)["uri"]).issuer == "Acme Notes"


def test_enrolling_again_while_pending_replaces_the_secret(api: Api, clock: FakeClock) -> None:
    token = api.tokens()["access_token"]
    first = start_enrolment(api, token)["secret"]
    second = start_enrolment(api, token)["secret"]

    assert first != second
    assert_error(confirm(api, token, code(first, clock)), 401, "mfa_code_invalid")
    assert confirm(api, token, code(second, clock)).status_code == 200


def test_a_confirmed_factor_refuses_a_new_enrolment_and_a_second_confirmation(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    before = state(api)

    assert_error(api.client.post(TOTP_URL, headers=bearer(user.access_token)), 409, "mfa_already_enabled")
    assert_error(confirm(api, user.access_token, code(user.secret, clock)), 409, "mfa_already_enabled")
    assert state(api) == before


def test_confirmation_ends_every_other_session_and_keeps_the_callers(api: Api, clock: FakeClock) -> None:
    other = api.tokens()
    user = enrolled(api, clock)

    assert api.me(user.access_token).status_code == 200
    assert_error(api.me(other["access_token"]), 401, "invalid_token")
    assert api.refresh(user.refresh_token).status_code == 200


def test_a_wrong_confirmation_code_is_refused_and_nothing_changes(api: Api, clock: FakeClock) -> None:
    token = api.tokens()["access_token"]
    secret = start_enrolment(api, token)["secret"]
    wrong = code(secret, clock, steps=5)

    assert_error(confirm(api, token, wrong), 401, "mfa_code_invalid")
    assert_error(confirm(api, token, "not a code"), 401, "mfa_code_invalid")
    assert api.me(token).json()["mfa_enabled"] is False
    assert_error(
        api.client.post(f"{TOTP_URL}/confirm", json={"code": "1"}, headers=bearer("nope")), 401, "invalid_token"
    )


def test_confirming_without_an_enrolment_is_404(api: Api) -> None:
    token = api.tokens()["access_token"]

    assert_error(confirm(api, token, "123456"), 404, "mfa_not_enrolled")
    assert_error(
        api.client.request("DELETE", TOTP_URL, json={"password": PASSWORD}, headers=bearer(token)),
        404,
        "mfa_not_enrolled",
    )


# -- the two-step login -----------------------------------------------------------------------------------------------


def test_a_login_takes_the_password_then_a_code_and_refreshes_keep_the_level(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    plain = claims(user.access_token)
    assert (plain["amr"], plain["aal"]) == (["pwd"], "aal1")

    mfa_token = challenge(api)
    response = second_step(api, mfa_token, code(user.secret, clock))

    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in", "expires_at"}
    assert response.headers["Cache-Control"] == "no-store"
    assert (claims(pair["access_token"])["amr"], claims(pair["access_token"])["aal"]) == (["pwd", "otp"], "aal2")
    assert api.me(pair["access_token"]).json()["mfa_enabled"] is True
    refreshed = api.refresh(pair["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert claims(refreshed.json()["access_token"])["aal"] == "aal2"


def test_cookie_mode_sets_the_refresh_cookie_at_the_second_step(make_api: MakeApi, clock: FakeClock) -> None:
    api = make_api(refresh_token_cookie=True, refresh_token_cookie_secure=False)
    service = service_of(api)
    api.created()
    principal = service.authenticate(service.issue_tokens(namespace="app-x", username="alice").access_token)
    secret = service.enrol_totp(principal).secret
    service.confirm_totp(principal, code(secret, clock))
    clock.advance(30)

    response = second_step(api, challenge(api), code(secret, clock))

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert "refresh_token=" in response.headers["set-cookie"]


def test_a_lost_phone_logs_in_with_a_recovery_code_once(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    spare = user.recovery_codes[0]

    first = second_step(api, challenge(api), spare.upper())
    again = second_step(api, challenge(api), spare)

    assert first.status_code == 200, first.text
    assert claims(first.json()["access_token"])["aal"] == "aal2"
    assert_refused(again, 401, "mfa_code_reused")
    assert second_step(api, challenge(api), user.recovery_codes[1]).status_code == 200


def test_a_wrong_code_is_refused_and_the_mfa_token_stays_usable(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    mfa_token = challenge(api)
    before = state(api)

    for wrong in (code(user.secret, clock, steps=3), "000000", "abcde-fghij", ""):
        assert_refused(second_step(api, mfa_token, wrong), 401, "mfa_code_invalid")

    assert state(api) == before
    assert second_step(api, mfa_token, code(user.secret, clock)).status_code == 200


def test_an_expired_mfa_token_is_refused(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    mfa_token = challenge(api)

    clock.advance(301)

    assert_refused(second_step(api, mfa_token, code(user.secret, clock)), 401, "mfa_token_invalid")


def test_an_mfa_token_is_single_use(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    mfa_token = challenge(api)
    assert second_step(api, mfa_token, code(user.secret, clock)).status_code == 200
    clock.advance(30)

    assert_refused(second_step(api, mfa_token, code(user.secret, clock)), 401, "mfa_token_invalid")
    assert_refused(second_step(api, "made-up", code(user.secret, clock)), 401, "mfa_token_invalid")


def test_a_code_is_accepted_once_and_older_steps_never_after_it(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    now = code(user.secret, clock)
    previous = code(user.secret, clock, steps=-1)
    assert second_step(api, challenge(api), now).status_code == 200
    before = state(api)

    assert_refused(second_step(api, challenge(api), now), 401, "mfa_code_reused")
    assert_refused(second_step(api, challenge(api), previous), 401, "mfa_code_reused")
    assert state(api) == before
    clock.advance(30)
    assert second_step(api, challenge(api), code(user.secret, clock)).status_code == 200


def test_a_code_of_the_previous_step_is_accepted_once_within_the_window(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    clock.advance(60)
    late = code(user.secret, clock, steps=-1)

    assert second_step(api, challenge(api), late).status_code == 200
    assert_refused(second_step(api, challenge(api), late), 401, "mfa_code_reused")


def test_a_password_changed_since_the_first_step_spoils_the_mfa_token(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    mfa_token = challenge(api)
    service_of(api).reset_password(namespace="app-x", username="alice", new_password="velvet quartz harbor")

    assert_refused(second_step(api, mfa_token, code(user.secret, clock)), 401, "mfa_token_invalid")


def test_wrong_codes_count_toward_the_password_lockout(make_api: MakeApi, clock: FakeClock) -> None:
    api = make_api(login_max_failures=3)
    user = enrolled(api, clock)
    mfa_token = challenge(api)

    for _ in range(2):
        assert_refused(second_step(api, mfa_token, "000000"), 401, "mfa_code_invalid")
    locked = second_step(api, mfa_token, code(user.secret, clock))
    login = api.login()

    assert_refused(locked, 429, "too_many_attempts")
    assert int(locked.headers["Retry-After"]) > 0
    assert_refused(login, 429, "too_many_attempts")
    clock.advance(31)
    assert second_step(api, mfa_token, code(user.secret, clock)).status_code == 200
    assert service_of(api).user_detail(namespace="app-x", username="alice").failed_login_count == 0


def test_a_wrong_password_still_gets_no_challenge(api: Api, clock: FakeClock) -> None:
    enrolled(api, clock)

    assert_refused(api.login(password=WRONG), 401, "invalid_credentials")


def test_an_mfa_token_is_no_bearer_token(api: Api, clock: FakeClock) -> None:
    enrolled(api, clock)
    mfa_token = challenge(api)

    assert_error(api.me(mfa_token), 401, "invalid_token")
    assert_error(api.client.get("/users/me/sessions", headers=bearer(mfa_token)), 401, "invalid_token")
    assert_error(api.client.post(TOTP_URL, headers=bearer(mfa_token)), 401, "invalid_token")


def test_the_second_step_is_rate_limited_per_address(make_api: MakeApi) -> None:
    api = make_api(rate_limit_enabled=True, rate_limit="2/minute")

    outcomes = [second_step(api, "made-up", "123456").status_code for _ in range(3)]

    assert outcomes == [401, 401, 429]


# -- removal and operators ------------------------------------------------------------------------------------------


def remove(api: Api, token: str, **proof: str) -> Any:
    return api.client.request("DELETE", TOTP_URL, json=proof, headers=bearer(token))


def test_removal_takes_a_code_or_the_password(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    before = state(api)

    assert_error(remove(api, user.access_token, password=WRONG), 401, "invalid_credentials")
    assert_error(remove(api, user.access_token, code="000000"), 401, "mfa_code_invalid")
    assert remove(api, user.access_token, code="1", password=PASSWORD).status_code == 422
    assert remove(api, user.access_token).status_code == 422
    assert state(api) == before

    response = remove(api, user.access_token, code=code(user.secret, clock))

    assert response.status_code == 200, response.text
    assert response.json()["mfa_enabled"] is False
    assert "access_token" in api.login().json()
    assert state(api)["codes"] == []


def test_removal_with_the_password(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)

    response = remove(api, user.access_token, password=PASSWORD)

    assert response.status_code == 200, response.text
    assert "access_token" in api.login().json()


def test_reset_mfa_from_the_cli_removes_the_factor_and_ends_the_sessions(api: Api, clock: FakeClock, cli: Cli) -> None:
    user = enrolled(api, clock)

    result = cli("reset-mfa", "app-x", "alice")
    shown = cli("show-user", "app-x", "alice", "--json")

    assert result.exit_code == 0, result.output
    assert "second factor removed" in result.stdout
    assert_error(api.me(user.access_token), 401, "invalid_token")
    assert '"mfa_enabled":false' in shown.stdout.replace(" ", "")
    assert "access_token" in api.login().json()
    again = cli("reset-mfa", "app-x", "alice", "--json")
    assert again.exit_code == 0 and '"removed": false' in again.stdout
    missing = cli("reset-mfa", "app-x", "nobody", "--json")
    assert missing.exit_code == 4
    assert '"code": "user_not_found"' in missing.stderr


def test_show_user_says_whether_a_second_factor_is_on(api: Api, clock: FakeClock, cli: Cli) -> None:
    enrolled(api, clock)

    result = cli("show-user", "app-x", "alice")

    assert result.exit_code == 0, result.output
    assert (
        "second factor  yes" in result.stdout.replace("   ", "  ") or "yes" in result.stdout.split("second factor")[1]
    )


def test_reset_mfa_through_the_admin_api(api: Api, clock: FakeClock) -> None:
    user = enrolled(api, clock)
    service = service_of(api)
    _info, key = service.create_admin_key(name="backend", namespace="app-x")
    url = "/admin/namespaces/app-x/users/alice"
    assert api.client.get(url, headers=bearer(key)).json()["mfa_enabled"] is True

    response = api.client.delete(f"{url}/mfa", headers=bearer(key))

    assert response.status_code == 204, response.text
    assert api.client.get(url, headers=bearer(key)).json()["mfa_enabled"] is False
    assert_error(api.me(user.access_token), 401, "invalid_token")
    assert_error(
        api.client.delete("/admin/namespaces/app-x/users/nobody/mfa", headers=bearer(key)), 404, "user_not_found"
    )
    assert_error(api.client.delete(f"{url}/mfa"), 401, "not_authenticated")


# -- policy: MFA_REQUIRED_NAMESPACES ----------------------------------------------------------------------------------


def test_a_required_namespace_hands_a_password_login_only_an_enrolment_token(
    make_api: MakeApi, clock: FakeClock
) -> None:
    api = make_api(mfa_required_namespaces="app-x")
    api.created()
    api.created(namespace="app-y")

    refused = api.login()
    assert "access_token" in api.login(namespace="app-y").json()
    body = assert_error(refused, 403, "mfa_enrolment_required")
    assert set(body) == {"detail", "code", "enrolment_token", "expires_in"}
    assert body["expires_in"] == 300
    enrolment = body["enrolment_token"]
    for response in (
        api.me(enrolment),
        api.client.get("/users/me/sessions", headers=bearer(enrolment)),
        api.client.patch("/users/me", json={"full_name": "x"}, headers=bearer(enrolment)),
        api.client.post("/auth/logout-all", headers=bearer(enrolment)),
    ):
        assert_error(response, 403, "mfa_enrolment_required")

    secret = start_enrolment(api, enrolment)["secret"]
    confirmed = confirm(api, enrolment, code(secret, clock))
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(30)
    assert "access_token" in second_step(api, challenge(api), code(secret, clock)).json()
    clock.advance(301)
    assert_error(api.client.post(TOTP_URL, headers=bearer(enrolment)), 401, "token_expired")


# -- requiring the second factor: require_user and the downstream verifier -------------------------------------------


def test_require_user_with_require_mfa_refuses_aal1_tokens(settings: Settings, clock: FakeClock) -> None:
    accounts = create_app(settings, clock=clock)
    host = FastAPI()
    host.mount("/accounts", accounts)

    strong_user, any_user = require_user(accounts, require_mfa=True), require_user(accounts)

    # (Defaults, not annotations: the annotations of this module are strings, which cannot name these locals.)
    @host.get("/vault")
    def vault(user: Profile = Depends(strong_user)) -> dict[str, str]:  # noqa: B008
        return {"owner": user.username}

    @host.get("/notes")
    def notes(user: Profile = Depends(any_user)) -> dict[str, str]:  # noqa: B008
        return {"owner": user.username}

    with TestClient(host) as web:
        account = {"namespace": "app-x", "username": "alice", "password": PASSWORD}
        assert web.post("/accounts/auth/register", json=account).status_code == 201
        plain = web.post("/accounts/auth/login", json=account).json()["access_token"]
        principal = service_of(accounts).authenticate(plain)
        secret = service_of(accounts).enrol_totp(principal).secret
        service_of(accounts).confirm_totp(principal, code(secret, clock))
        clock.advance(30)
        mfa_token = web.post("/accounts/auth/login", json=account).json()["mfa_token"]
        strong = web.post("/accounts/auth/login/mfa", json={"mfa_token": mfa_token, "code": code(secret, clock)})
        strong_token = strong.json()["access_token"]

        assert_error(web.get("/vault", headers=bearer(plain)), 403, "mfa_required")
        assert web.get("/notes", headers=bearer(plain)).json() == {"owner": "alice"}
        assert web.get("/vault", headers=bearer(strong_token)).json() == {"owner": "alice"}


@pytest.fixture
def verifier(api: Api, monkeypatch: pytest.MonkeyPatch) -> TokenVerifier:
    checker = TokenVerifier("http://127.0.0.1:9/.well-known/jwks.json", issuer="user-service", audience="user-service")
    monkeypatch.setattr(checker._client, "fetch_data", lambda: api.client.get("/.well-known/jwks.json").json())
    return checker


def on_the_wall_clock(api: Api, token: str) -> str:
    """The token's claims re-signed by the service's key with real times (the verifier reads the wall clock)."""
    now = int(time.time())
    snapshot = service_of(api).context.keys.snapshot
    assert snapshot is not None
    signer = snapshot.signer
    body = {**claims(token), "iat": now, "exp": now + 900}
    return jwt.encode(body, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid})


def test_the_downstream_verifier_reads_the_level_and_can_require_it(
    api: Api, clock: FakeClock, verifier: TokenVerifier
) -> None:
    user = enrolled(api, clock)
    pair = second_step(api, challenge(api), code(user.secret, clock)).json()
    plain = on_the_wall_clock(api, user.access_token)
    strong = on_the_wall_clock(api, pair["access_token"])
    legacy_claims = {key: value for key, value in claims(plain).items() if key not in ("amr", "aal")}
    legacy = on_the_wall_clock(api, jwt.encode(legacy_claims, "x" * 32, algorithm="HS256"))

    assert (verifier.verify(plain).aal, verifier.verify(plain).amr) == ("aal1", ("pwd",))
    assert (verifier.verify(strong).aal, verifier.verify(strong).amr) == ("aal2", ("pwd", "otp"))
    assert verifier.verify(legacy).aal == "aal1"
    with pytest.raises(MfaRequired):
        verifier.verify(plain, require_mfa=True)
    with pytest.raises(MfaRequired):
        verifier.verify(legacy, require_mfa=True)
    assert verifier.verify(strong, require_mfa=True).aal == "aal2"

    downstream = FastAPI()

    second_factor = verifier.dependency(require_mfa=True)

    @downstream.get("/vault")
    def vault(claims: Any = Depends(second_factor)) -> dict[str, str]:  # noqa: B008
        return {"aal": claims.aal}

    with TestClient(downstream) as web:
        assert_error(web.get("/vault", headers=bearer(plain)), 403, "mfa_required")
        assert web.get("/vault", headers=bearer(strong)).json() == {"aal": "aal2"}
        assert web.get("/vault").status_code == 401


def test_the_downstream_verifier_refuses_an_enrolment_token(make_api: MakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    api = make_api(mfa_required_namespaces="app-x")
    api.created()
    enrolment = api.login().json()["enrolment_token"]
    checker = TokenVerifier(
        "http://127.0.0.1:9/.well-known/jwks.json", issuer="user-service", audience="user-service", require_mfa=False
    )
    monkeypatch.setattr(checker._client, "fetch_data", lambda: api.client.get("/.well-known/jwks.json").json())

    with pytest.raises(TokenRejected):
        checker.verify(on_the_wall_clock(api, enrolment))
