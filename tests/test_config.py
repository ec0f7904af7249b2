"""Settings: the defaults, where values come from, the refusal of weak secrets, and the public face of the package."""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from pydantic import ValidationError
from sqlalchemy.engine import make_url

import user_service
from tests.conftest import TEST_SECRET
from user_service.config import Settings, load_settings
from user_service.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PLACEHOLDER_SECRET = str(dotenv_values(ENV_EXAMPLE)["JWT_SECRET_KEY"])
GOOD_SECRET = "hs512-needs-a-long-key-" + "0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ"


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without a .env, so only what a test sets is read."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def test_defaults_match_the_contract(empty_cwd: Path) -> None:
    settings = Settings()

    url = make_url(settings.database_url)
    assert (url.get_backend_name(), url.database) == ("sqlite", "user-service.db")
    assert settings.jwt_secret_key is None
    assert settings.jwt_algorithm == "ES256"
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 2_592_000
    assert settings.bcrypt_rounds == 12
    assert settings.avatar_max_bytes == 2_097_152
    assert settings.upload_dir == Path("uploads")
    assert settings.public_base_url is None
    assert settings.login_max_failures == 10


def test_default_database_is_a_file_in_the_working_directory(empty_cwd: Path) -> None:
    from user_service.db import make_engine

    engine = make_engine(Settings())
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    finally:
        engine.dispose()

    assert (empty_cwd / "user-service.db").is_file()


VALUES = {
    "DATABASE_URL": "postgresql://accounts@db.internal:5432/accounts",
    "JWT_SECRET_KEY": GOOD_SECRET,
    "JWT_ALGORITHM": "HS512",
    "ACCESS_TOKEN_TTL_SECONDS": "60",
    "REFRESH_TOKEN_TTL_SECONDS": "3600",
    "BCRYPT_ROUNDS": "5",
    "AVATAR_MAX_BYTES": "4096",
    "UPLOAD_DIR": "/srv/avatars",
    "PUBLIC_BASE_URL": "https://accounts.example.com/",
    "LOGIN_MAX_FAILURES": "3",
}


def assert_values_applied(settings: Settings) -> None:
    assert settings.database_url == VALUES["DATABASE_URL"]
    assert settings.signing_key() == GOOD_SECRET
    assert settings.jwt_algorithm == "HS512"
    assert settings.access_token_ttl_seconds == 60
    assert settings.refresh_token_ttl_seconds == 3600
    assert settings.bcrypt_rounds == 5
    assert settings.avatar_max_bytes == 4096
    assert settings.upload_dir == Path("/srv/avatars")
    assert settings.public_base_url == "https://accounts.example.com"
    assert settings.login_max_failures == 3


def test_environment_variables_are_read(empty_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)

    assert_values_applied(Settings(_env_file=None))  # type: ignore[call-arg]


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    return path


def test_an_env_file_is_read(empty_cwd: Path, tmp_path: Path) -> None:
    env_file = write_env(tmp_path / "service.env", VALUES)

    assert_values_applied(Settings(_env_file=env_file))  # type: ignore[call-arg]
    assert_values_applied(load_settings(env_file))


def test_dot_env_in_the_working_directory_is_read(empty_cwd: Path) -> None:
    write_env(empty_cwd / ".env", VALUES)

    assert_values_applied(Settings())


def test_environment_wins_over_the_env_file(empty_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(empty_cwd / ".env", VALUES)
    monkeypatch.setenv("ACCESS_TOKEN_TTL_SECONDS", "120")

    assert Settings().access_token_ttl_seconds == 120


def test_a_missing_env_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="env file"):
        load_settings(tmp_path / "absent.env")


WEAK_SECRETS = [
    pytest.param("Kx9-short-Q2z", id="shorter than 32"),
    pytest.param(PLACEHOLDER_SECRET, id="placeholder from .env.example"),
    pytest.param("ab" * 24, id="low variety"),
]


def refusal_from_constructor(secret: str, _monkeypatch: pytest.MonkeyPatch) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(jwt_secret_key=secret, _env_file=None)  # type: ignore[call-arg]
    return f"{caught.value}\n{caught.value!r}"


def refusal_from_environment(secret: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("JWT_SECRET_KEY", secret)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    return f"{caught.value}\n{caught.value!r}"


@pytest.mark.parametrize("refuse", [refusal_from_constructor, refusal_from_environment])
@pytest.mark.parametrize("secret", WEAK_SECRETS)
def test_weak_secret_is_refused_without_echoing_it(
    empty_cwd: Path, monkeypatch: pytest.MonkeyPatch, secret: str, refuse: Any
) -> None:
    message = refuse(secret, monkeypatch)

    assert "JWT_SECRET_KEY" in message
    # A refused secret may still be a real one: it must not reach logs through the error.
    assert secret[:10] not in message
    assert secret[-10:] not in message


@pytest.mark.parametrize("source", ["explicit settings", "environment"])
def test_create_app_without_a_secret_raises(empty_cwd: Path, source: str) -> None:
    from user_service import create_app

    settings = Settings(_env_file=None) if source == "explicit settings" else None  # type: ignore[call-arg]

    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY"):
        create_app(settings)
    assert not (empty_cwd / "user-service.db").exists()


def example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()


def test_env_example_lists_every_setting_with_a_comment() -> None:
    lines = example_lines()
    settings_lines = [
        (index, line.split("=", 1)[0]) for index, line in enumerate(lines) if line.strip() and not line.startswith("#")
    ]
    names = [name for _, name in settings_lines]
    uncommented = [name for index, name in settings_lines if index == 0 or not lines[index - 1].startswith("#")]

    assert sorted(names) == sorted(name.upper() for name in Settings.model_fields)
    assert uncommented == []


def test_env_example_holds_the_defaults_and_a_refused_placeholder(empty_cwd: Path, tmp_path: Path) -> None:
    without_secret = [line for line in example_lines() if not line.startswith("JWT_SECRET_KEY=")]
    copy = tmp_path / "example.env"
    copy.write_text("\n".join(without_secret) + "\n", encoding="utf-8")

    assert Settings(_env_file=copy).model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY"):
        load_settings(ENV_EXAMPLE)


IMPORT_PROBE = textwrap.dedent(
    """
    import collections.abc, json, os, sys

    reads = []
    opened = []

    class Watched(collections.abc.MutableMapping):
        def __init__(self, inner):
            self.inner = inner
        def __getitem__(self, key):
            reads.append(key)
            return self.inner[key]
        def __setitem__(self, key, value):
            reads.append(key)
            self.inner[key] = value
        def __delitem__(self, key):
            reads.append(key)
            del self.inner[key]
        def __iter__(self):
            reads.append("<all>")
            return iter(self.inner)
        def __len__(self):
            reads.append("<all>")
            return len(self.inner)

    def audit(event, args):
        if event == "open" and isinstance(args[0], str):
            opened.append(args[0])

    os.environ = Watched(os.environ)
    sys.addaudithook(audit)
    import user_service
    heavy = ["fastapi", "starlette", "sqlalchemy", "pydantic", "pydantic_settings", "typer", "alembic", "uvicorn"]
    print(json.dumps({
        "version": user_service.__version__,
        "heavy": [name for name in heavy if name in sys.modules],
        "reads": reads,
        "opened_here": [path for path in opened if os.path.abspath(path).startswith(os.getcwd())],
    }))
    """
)


def test_importing_the_package_is_cheap_and_reads_nothing(empty_cwd: Path) -> None:
    write_env(empty_cwd / ".env", {"JWT_SECRET_KEY": "short"})

    done = subprocess.run(
        [sys.executable, "-I", "-c", IMPORT_PROBE],
        cwd=empty_cwd,
        env={"JWT_SECRET_KEY": "short", "DATABASE_URL": "not a url", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"version": user_service.__version__, "heavy": [], "reads": [], "opened_here": []}


def test_public_names_import() -> None:
    from user_service import Settings as PublicSettings
    from user_service import create_app, require_user

    assert PublicSettings is Settings
    assert callable(create_app)
    assert callable(require_user)


@pytest.mark.parametrize("name", user_service.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(user_service, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = user_service.no_such_name  # type: ignore[attr-defined]


def test_package_ships_py_typed() -> None:
    assert importlib.resources.files("user_service").joinpath("py.typed").is_file()


@pytest.mark.parametrize(("algorithm", "needed"), [("HS384", 48), ("HS512", 64)])
def test_longer_hashes_need_longer_secrets(algorithm: str, needed: int) -> None:
    """RFC 7518 3.2: the HMAC key is at least as long as the hash output."""
    with pytest.raises(ValidationError, match=f"at least {needed} bytes for {algorithm}"):
        Settings(_env_file=None, jwt_secret_key=TEST_SECRET, jwt_algorithm=algorithm)  # type: ignore[call-arg]
    long_enough = "k3y-2CyUzoYu2_A_NESWyypweSr94O8OurgH3krLM_jtMYximQhbUGemWfJFPSqDFrhGp64qGDB9"
    assert Settings(_env_file=None, jwt_secret_key=long_enough, jwt_algorithm=algorithm).jwt_algorithm == algorithm  # type: ignore[call-arg]
