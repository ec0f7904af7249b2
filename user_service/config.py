"""Settings, read from the environment and `.env` (pydantic-settings).

Nothing here runs at import time: a `Settings()` call reads the environment when the caller asks for it.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from user_service.errors import ConfigurationError
from user_service.validation import describe_errors, normalize_namespace

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SECRET_MIN_LENGTH = 32
# 128 bits is out of reach of any search; 32 random characters from one case and digits hold about 165.
SECRET_MIN_BITS = 128
# Enough characters to judge: beyond them the estimate would only grow, and the scan is quadratic.
SECRET_SAMPLE_LENGTH = 256
# Upper bounds of the durations: far beyond any sensible value, far below what a date or an interval can hold.
TEN_YEARS_SECONDS = 10 * 365 * 86_400
ONE_YEAR_SECONDS = 365 * 86_400
ONE_DAY_SECONDS = 86_400
# The longest access token the service issues (the bound of ACCESS_TOKEN_TTL_SECONDS).
MAX_ACCESS_TOKEN_TTL_SECONDS = ONE_DAY_SECONDS
_KEY_BYTES_FOR = {"HS256": 32, "HS384": 48, "HS512": 64}
# Algorithms whose keys live in the database (public halves published as a JWKS); HS* sign with JWT_SECRET_KEY.
ASYMMETRIC_ALGORITHMS = ("ES256", "EdDSA", "RS256")
HMAC_ALGORITHMS = tuple(_KEY_BYTES_FOR)
_PLACEHOLDER_WORDS = ("replace-me", "change-me", "changeme", "changethis", "placeholder", "example")


_DATABASE_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
_DATABASE_URL_FORMS = "use sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname"
_RATE_RE = re.compile(r"[1-9][0-9]{0,6}\s*/\s*(second|minute|hour|day)")


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _every_item(value: str, parse: Callable[[str], object], problem: str) -> str:
    """The comma-separated setting as it is, once `parse` takes each item; else `problem` naming the first misfit."""
    for item in _split(value):
        try:
            parse(item)
        except ValueError:
            raise ValueError(problem.format(item=repr(item))) from None
    return value


def secret_problem(value: str) -> str | None:
    """Say why a JWT secret is unfit, or return None when it is fine."""
    if len(value) < SECRET_MIN_LENGTH:
        return f"JWT_SECRET_KEY must be at least {SECRET_MIN_LENGTH} characters"
    lowered = value.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return "JWT_SECRET_KEY is a placeholder; generate one with `user-service init`"
    if len(set(value)) < 10:
        return "JWT_SECRET_KEY is too repetitive to be a random secret"
    bits = estimated_entropy_bits(value)
    if bits < SECRET_MIN_BITS:
        return (
            f"JWT_SECRET_KEY is too predictable to be a random secret (about {bits:.0f} bits, at least "
            f"{SECRET_MIN_BITS} needed); generate one with `user-service init`"
        )
    return None


def _character_pool(value: str) -> int:
    """How many symbols the characters of `value` are drawn from, judged by the classes present."""
    pool = 0
    if any("a" <= c <= "z" for c in value):
        pool += 26
    if any("A" <= c <= "Z" for c in value):
        pool += 26
    if any("0" <= c <= "9" for c in value):
        pool += 10
    if any(c.isascii() and not c.isalnum() for c in value):
        pool += 33
    if any(not c.isascii() for c in value):
        pool += 128
    return pool


def _unpredictable_characters(value: str) -> int:
    """The characters that neither repeat an earlier stretch of three or more nor continue a run with a constant
    step ('aaaa', '1234', 'zyx', '2468'): what is left to guess once the pattern is known."""
    count, i = 0, 0
    while i < len(value):
        length = 3
        while i + length <= len(value) and value.find(value[i : i + length], 0, i + length - 1) != -1:
            length += 1
        if length > 3:
            # value[i : i + length - 1] repeats an earlier stretch: one choice (where from), however long.
            count += 1
            i += length - 1
            continue
        step = [ord(c) for c in value[max(0, i - 2) : i + 1]]
        if not (len(step) == 3 and step[2] - step[1] == step[1] - step[0]):
            count += 1
        i += 1
    return count


def estimated_entropy_bits(value: str) -> float:
    """A conservative estimate of the randomness in a secret: its unpredictable characters, each worth the bits of
    the character classes it uses. `secrets.token_urlsafe(48)` scores about 400."""
    sample = value[:SECRET_SAMPLE_LENGTH]
    return _unpredictable_characters(sample) * math.log2(max(_character_pool(sample), 2))


def _checked_database_url(value: str, name: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    value = value.strip()
    try:
        driver = make_url(value).drivername
    except (ArgumentError, ValueError):
        # The URL may hold a password: the message never repeats it.
        raise ValueError(f"{name} is not a database URL; {_DATABASE_URL_FORMS}") from None
    if driver not in _DATABASE_DRIVERS:
        raise ValueError(f"{name} names an unsupported database ({driver}); {_DATABASE_URL_FORMS}")
    return value


class Settings(BaseSettings):
    """Every setting of the service; names are the environment variables' names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
        hide_input_in_errors=True,
    )

    database_url: str = "sqlite:///user-service.db"
    # Connections the PostgreSQL pool keeps, and how many more it opens for a burst (each closed when returned).
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    db_max_overflow: int = Field(default=5, ge=0, le=1000)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    db_pool_recycle_seconds: int = Field(default=1800, ge=-1, le=ONE_DAY_SECONDS)
    db_connect_timeout_seconds: int = Field(default=5, ge=1, le=300)
    # PostgreSQL session limits: a held row lock or a runaway statement costs the requests that wait on it a bounded
    # wait, never the whole pool.
    db_lock_timeout_seconds: float = Field(default=2.0, gt=0, le=300)
    db_statement_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    db_idle_in_transaction_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # What sits between the service and PostgreSQL: "transaction" for a pooler that hands a server connection to
    # another client after each transaction (PgBouncer in transaction mode, RDS Proxy, Supavisor, pgcat).
    db_pooler: Literal["none", "transaction"] = "none"
    db_prepared_statements: bool = True
    # A direct PostgreSQL URL for `migrate` (and the other schema commands), when DATABASE_URL names a pooler.
    migration_database_url: str | None = None

    jwt_secret_key: SecretStr | None = None
    jwt_algorithm: Literal["ES256", "EdDSA", "RS256", "HS256", "HS384", "HS512"] = "ES256"
    jwt_issuer: str = Field(default="user-service", min_length=1)
    jwt_audience: str = Field(default="user-service", min_length=1)
    access_token_ttl_seconds: int = Field(default=900, ge=1, le=MAX_ACCESS_TOKEN_TTL_SECONDS)
    refresh_token_ttl_seconds: int = Field(default=2_592_000, ge=60, le=TEN_YEARS_SECONDS)
    session_max_lifetime_seconds: int = Field(default=7_776_000, ge=60, le=TEN_YEARS_SECONDS)
    # Seconds after a refresh token's rotation during which presenting it again (a second tab, a retried request
    # whose answer was lost) gets a new pair in the same session instead of revoking it; 0: never.
    refresh_reuse_interval_seconds: int = Field(default=0, ge=0, le=300)

    bcrypt_rounds: int = Field(default=12, ge=4, le=20)
    password_min_length: int = Field(default=8, ge=8, le=72)

    login_max_failures: int = Field(default=10, ge=1, le=100)
    login_account_max_failures: int = Field(default=100, ge=1, le=10_000)
    login_lockout_seconds: int = Field(default=30, ge=1, le=ONE_DAY_SECONDS)
    login_lockout_max_seconds: int = Field(default=900, ge=1, le=ONE_YEAR_SECONDS)
    login_require_verified_email: bool = False
    password_reset_ttl_seconds: int = Field(default=1800, ge=60, le=ONE_DAY_SECONDS)
    email_verification_ttl_seconds: int = Field(default=86_400, ge=60, le=30 * ONE_DAY_SECONDS)

    avatar_max_bytes: int = Field(default=2_097_152, ge=1024, le=64 * 1024 * 1024)
    avatar_max_pixels: int = Field(default=16_777_216, ge=1, le=200_000_000)
    avatar_max_dimension: int = Field(default=1024, ge=16, le=8192)
    upload_dir: Path = Path("uploads")
    public_base_url: str | None = None
    # Where avatars are stored: files in UPLOAD_DIR, or objects in an S3-compatible bucket (credentials come from
    # the standard AWS chain, never from these settings).
    avatar_storage: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_key_prefix: str = ""
    avatar_public_base_url: str | None = None
    request_max_bytes: int = Field(default=262_144, ge=1024, le=64 * 1024 * 1024)

    registration_enabled: bool = True
    registration_namespaces: str = ""
    # The second factor: the issuer shown by authenticator apps, and the namespaces whose users must have one.
    mfa_issuer: str = Field(default="user-service", min_length=1, max_length=64)
    mfa_required_namespaces: str = ""

    rate_limit_enabled: bool = True
    rate_limit: str = "20/minute"
    redis_url: str | None = None
    rate_limit_key_prefix: str | None = None
    rate_limit_redis_timeout_seconds: float = Field(default=0.3, gt=0, le=10)
    trusted_proxies: str = ""
    cors_origins: str = ""
    # Browser apps: the refresh token travels in an HttpOnly cookie scoped to /auth instead of the JSON body.
    refresh_token_cookie: bool = False
    refresh_token_cookie_secure: bool = True
    refresh_token_cookie_samesite: Literal["strict", "lax", "none"] = "strict"  # noqa: S105 (not a secret)
    docs_enabled: bool = True
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True
    # `serve`'s Prometheus listener, apart from the public port; unset: no listener and nothing counted.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_namespace_label: bool = False

    http_max_header_bytes: int = Field(default=32_768, ge=1024, le=1_048_576)
    http_max_headers: int = Field(default=100, ge=10, le=1000)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    http_max_connections: int = Field(default=1000, ge=1, le=100_000)

    # Parsed forms of the list settings above, computed once at load.
    _trusted_proxy_networks: tuple[Network, ...] = PrivateAttr(default=())
    _cors_origin_list: tuple[str, ...] = PrivateAttr(default=())
    _registration_namespace_set: frozenset[str] | None = PrivateAttr(default=None)
    _mfa_namespace_set: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("registration_namespaces", "mfa_required_namespaces")
    @classmethod
    def _namespaces_parse(cls, value: str, info: ValidationInfo) -> str:
        name = str(info.field_name).upper()
        return _every_item(value, normalize_namespace, name + ": {item} is not a namespace")

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str) -> str:
        return _checked_database_url(value, "DATABASE_URL")

    @field_validator("migration_database_url")
    @classmethod
    def _migration_url_parses(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        return _checked_database_url(value, "MIGRATION_DATABASE_URL")

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        if not _RATE_RE.fullmatch(value.strip()):
            raise ValueError("RATE_LIMIT must look like '20/minute' (per second, minute, hour or day)")
        return value.strip()

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("rate_limit_key_prefix")
    @classmethod
    def _key_prefix_is_plain(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not re.fullmatch(r"[A-Za-z0-9._:-]{1,100}", value):
            raise ValueError("RATE_LIMIT_KEY_PREFIX must be 1-100 characters of letters, digits and . _ : -")
        return value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _metrics_port_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host_is_address(cls, value: str) -> str:
        value = value.strip()
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError("METRICS_HOST must be an IP address or localhost") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        return _every_item(
            value,
            partial(ipaddress.ip_network, strict=False),
            "TRUSTED_PROXIES: {item} is not an IP address or network",
        )

    @field_validator("cors_origins")
    @classmethod
    def _origins_parse(cls, value: str) -> str:
        for item in _split(value):
            if item != "*" and not item.startswith(("http://", "https://")):
                raise ValueError(f"CORS_ORIGINS: {item!r} is not an http(s) origin")
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        """TRUSTED_PROXIES, parsed once when the settings were loaded."""
        return self._trusted_proxy_networks

    def registration_open(self, namespace: str) -> bool:
        """Whether anyone may register in the (normalized) namespace: REGISTRATION_ENABLED, and the namespace among
        REGISTRATION_NAMESPACES when that is set. Operators create accounts anywhere."""
        names = self._registration_namespace_set
        return self.registration_enabled and (names is None or namespace in names)

    def mfa_required(self, namespace: str) -> bool:
        """Whether users of the (normalized) namespace must log in with a second factor (MFA_REQUIRED_NAMESPACES)."""
        return namespace in self._mfa_namespace_set

    @property
    def cors_origin_list(self) -> list[str]:
        """CORS_ORIGINS, parsed once when the settings were loaded."""
        return list(self._cors_origin_list)

    @field_validator("jwt_secret_key")
    @classmethod
    def _secret_is_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        problem = secret_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("PUBLIC_BASE_URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("s3_bucket", "s3_region")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return None if value is None or value.strip() == "" else value.strip()

    @field_validator("s3_endpoint_url", "avatar_public_base_url")
    @classmethod
    def _http_origin(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{str(info.field_name).upper()} must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("s3_key_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._/-]{0,200}", value) or value.startswith("/") or ".." in value:
            raise ValueError("S3_KEY_PREFIX must be up to 200 characters of letters, digits and . _ / -, not /-led")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.avatar_storage == "s3" and self.s3_bucket is None:
            raise ValueError("AVATAR_STORAGE=s3 needs S3_BUCKET")
        if self.login_lockout_max_seconds < self.login_lockout_seconds:
            raise ValueError("LOGIN_LOCKOUT_MAX_SECONDS must not be below LOGIN_LOCKOUT_SECONDS")
        if self.login_account_max_failures < self.login_max_failures:
            raise ValueError("LOGIN_ACCOUNT_MAX_FAILURES must not be below LOGIN_MAX_FAILURES")
        # RFC 7518 3.2: an HMAC key at least as long as the hash output.
        needed = _KEY_BYTES_FOR.get(self.jwt_algorithm, 0)
        if self.jwt_secret_key is not None and len(self.jwt_secret_key.get_secret_value().encode()) < needed:
            raise ValueError(f"JWT_SECRET_KEY must be at least {needed} bytes for {self.jwt_algorithm}")
        self._trusted_proxy_networks = tuple(
            ipaddress.ip_network(item, strict=False) for item in _split(self.trusted_proxies)
        )
        self._cors_origin_list = tuple(item.rstrip("/") for item in _split(self.cors_origins))
        names = _split(self.registration_namespaces)
        self._registration_namespace_set = frozenset(map(normalize_namespace, names)) if names else None
        self._mfa_namespace_set = frozenset(map(normalize_namespace, _split(self.mfa_required_namespaces)))
        return self

    @property
    def uses_key_store(self) -> bool:
        """Whether access tokens are signed with the database's asymmetric keys (else with JWT_SECRET_KEY)."""
        return self.jwt_algorithm in ASYMMETRIC_ALGORITHMS

    def signing_key(self) -> str:
        """The JWT secret, or a ConfigurationError saying it is missing."""
        if self.jwt_secret_key is None:
            raise ConfigurationError("JWT_SECRET_KEY is not set; run `user-service init` or set it in the environment")
        return self.jwt_secret_key.get_secret_value()


# Names the env file `load_settings()` reads instead of ./.env; empty: no file at all. `serve` sets it for its
# workers, so that they read exactly the file it was given.
ENV_FILE_VARIABLE = "USER_SERVICE_ENV_FILE"


def load_settings(env_file: Path | None = None, **overrides: object) -> Settings:
    """Read settings from the environment and an env file (`env_file`, else the one USER_SERVICE_ENV_FILE names,
    else ./.env), turning validation errors into one message."""
    values: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    named = os.environ.get(ENV_FILE_VARIABLE)
    if env_file is None and named is not None:
        if named.strip() == "":
            values["_env_file"] = None
        else:
            env_file = Path(named)
    if env_file is not None and not env_file.is_file():
        raise ConfigurationError(f"env file not found: {env_file}")
    if env_file is not None:
        values["_env_file"] = env_file
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc)) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"env file {env_file or '.env'} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"env file {env_file or '.env'} cannot be read: {exc.strerror}") from None


def _setting_name(error: ErrorDetails) -> str:
    return str(error["loc"][0]).upper() if error["loc"] else "settings"


def describe_settings_error(exc: ValidationError) -> str:
    """The invalid settings in one line, naming each environment variable and never echoing its value."""
    return describe_errors(exc.errors(include_input=False, include_url=False), where=_setting_name)
