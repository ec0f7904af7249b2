"""What every domain module works with: one frozen context (settings, database, storage, clock, passwords) and the
records the core passes around."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from user_service import security
from user_service.config import Settings
from user_service.passwords import normalize_password
from user_service.service.database import Database
from user_service.signing import PrivateKey, PublicKey
from user_service.storage import AvatarStorage

Clock = Callable[[], datetime]

# How many verified access tokens a process remembers (a few hundred bytes each).
VERIFIED_TOKENS_MAX = 10_000
_DUMMY_PASSWORD = "timing-equaliser-for-unknown-users"  # noqa: S105 (hashed for timing only)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Passwords:
    """Hashing and checking at the configured cost, in Unicode normal form NFKC, and a check against a dummy hash
    for unknown accounts."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def hash(self, password: str) -> str:
        return security.hash_password(normalize_password(password), self.rounds)

    def matching_form(self, password: str, password_hash: str) -> Literal["normal", "typed"] | None:
        """Which form of the password matches the hash: its NFKC form, or (for a hash stored before passwords were
        normalized) the form it was typed in; None when neither does."""
        normal = normalize_password(password)
        if security.check_password(normal, password_hash):
            return "normal"
        if normal != password and security.check_password(password, password_hash):
            return "typed"
        return None

    def check(self, password: str, password_hash: str) -> bool:
        return self.matching_form(password, password_hash) is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return security.hash_rounds(password_hash) != self.rounds

    def equalise_timing(self, password: str) -> None:
        """Spend the time of a real check, so an unknown account answers as slowly as a wrong password."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self.hash(_DUMMY_PASSWORD)
        self.check(password, self._dummy_hash)


@dataclass(frozen=True, slots=True)
class SigningKeyInUse:
    """The key that signs access tokens now: its id, algorithm and opened private key."""

    kid: str
    algorithm: str
    private_key: PrivateKey


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """The keys as last read from the database: the signer, each published key by kid (with its algorithm), and
    their public JWKs."""

    signer: SigningKeyInUse
    verifiers: Mapping[str, tuple[PublicKey, str]]
    jwks: tuple[Mapping[str, str], ...]
    loaded_at: float


class VerifiedTokens:
    """Access tokens this process has fully verified, by the whole token, each kept only until its `exp`: a repeat
    of the same token skips the signature check (the same bytes verify the same way under the same keys), never the
    expiry check or the read of the user and session. Bounded: the oldest entry leaves first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, token: str, now: float) -> Any | None:
        claims = self._entries.get(token)
        if claims is None:
            return None
        if now >= claims.expires_at:
            with self._lock:
                self._entries.pop(token, None)
            return None
        return claims

    def put(self, token: str, claims: Any) -> None:
        with self._lock:
            while len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[token] = claims

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class KeyRing:
    """This process's copy of the signing keys, replaced whole on each reload (readers never see a half-made
    one); `monotonic` is the clock of its refreshes."""

    snapshot: KeySnapshot | None = None
    # How many reloads have ended, and whether the last one failed (the database unreachable): threads that waited
    # for a reload take its result, or fail with it, rather than each asking the database again in turn.
    reloads: int = 0
    last_reload_failed: bool = False
    last_unknown_kid_reload: float = float("-inf")
    monotonic: Callable[[], float] = time.monotonic
    lock: threading.Lock = field(default_factory=threading.Lock)
    verified: VerifiedTokens = field(default_factory=lambda: VerifiedTokens(VERIFIED_TOKENS_MAX))


@dataclass(frozen=True, slots=True)
class Context:
    """The service's collaborators, shared by every domain module."""

    settings: Settings
    db: Database
    storage: AvatarStorage
    clock: Clock
    passwords: Passwords = field(compare=False)
    keys: KeyRing = field(default_factory=KeyRing, compare=False)


@dataclass(frozen=True, slots=True)
class Account:
    """A user row as read, detached from any database session."""

    id: uuid.UUID
    namespace: str
    username: str
    password_hash: str
    email: str | None
    full_name: str | None
    avatar_url: str | None
    avatar_key: str | None
    extra: dict[str, str]
    is_active: bool
    failed_login_count: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None = None
    email_verified: bool = False
    # Whether the account has a confirmed second factor (read with the row; not a column of it).
    mfa_enabled: bool = False

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Account:
        """An account from a row that holds its columns by name (other columns are ignored; `mfa_enabled` may be
        missing from a row that was never stored)."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name != "mfa_enabled" or name in row})

    def columns(self) -> dict[str, Any]:
        """The values of the users table's columns, for an INSERT."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "mfa_enabled"}


@dataclass(frozen=True, slots=True)
class TokenSubject:
    """Whom an access token names."""

    id: uuid.UUID
    namespace: str
    username: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an access token speaks for: the user (read fresh from the database) and the token's session."""

    user: Account
    session_id: uuid.UUID
    # The token's assurance level ('aal2' after a second factor) and scope (only enrolment tokens have one).
    aal: str = security.AAL1
    scope: str | None = None

    @property
    def enrolment_only(self) -> bool:
        return self.scope == security.ENROLMENT_SCOPE
