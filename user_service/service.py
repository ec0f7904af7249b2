"""The service core: registration, login, tokens, profiles and avatars. Knows nothing of HTTP or terminals.

Every method is blocking (database calls, bcrypt); the HTTP layer runs them in a worker thread, except the
single-row reads on SQLite (see `reads_are_local`). Each method is
one short transaction, and the checks that must hold under concurrency are made by the database itself (unique
constraints, conditional updates, row locks), never by a read followed by a write in another transaction.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Executable,
    Row,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from user_service import security
from user_service.config import Settings
from user_service.db import SQLITE_BUSY_TIMEOUT_MS, Base, make_engine, make_sessionmakers, make_single_read_engine
from user_service.errors import (
    DatabaseUnavailable,
    EmailTaken,
    FileTooLarge,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    RefreshTokenReused,
    SessionNotFound,
    TokenExpired,
    TooManyAttempts,
    UserDisabled,
    UsernameTaken,
    UserNotFound,
    UserServiceError,
)
from user_service.events import security_event
from user_service.images import detect_image
from user_service.models import AuthSession, RefreshToken, User
from user_service.passwords import check_password_policy
from user_service.schemas import Profile, ProfilePatch, RegisterRequest, SessionInfo, TokenPair
from user_service.storage import AvatarStorage, LocalAvatarStorage
from user_service.validation import EXTRA_MAX_KEYS, normalize_namespace, normalize_username

Clock = Callable[[], datetime]
ModelT = TypeVar("ModelT", bound=BaseModel)

log = logging.getLogger("user_service.service")

_DUMMY_PASSWORD = "timing-equaliser-for-unknown-users"  # noqa: S105 (hashed for timing only)


def utcnow() -> datetime:
    return datetime.now(UTC)


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


ACCOUNT_COLUMNS = tuple(User.__table__.c[name] for name in Account.__dataclass_fields__)

# The user an access token names, joined with the token's session: one indexed read on every authenticated
# request, built once (its compiled form is cached by SQLAlchemy).
_PRINCIPAL_QUERY = (
    select(*ACCOUNT_COLUMNS, AuthSession.revoked_at, AuthSession.expires_at)
    .join(AuthSession, and_(AuthSession.user_id == User.id, AuthSession.id == bindparam("session_id")))
    .where(User.id == bindparam("user_id"))
)

_PING = text("SELECT 1")
# The frequent writes, built once on the tables (not the ORM classes): each call only binds its values.
_USERS, _SESSIONS, _REFRESH_TOKENS = (
    Base.metadata.tables[name] for name in ("users", "auth_sessions", "refresh_tokens")
)
_UPDATE_USER = update(_USERS).where(_USERS.c.id == bindparam("user_key"))  # SET from the parameters given
_INSERT_USER = insert(_USERS)
_INSERT_SESSION = insert(_SESSIONS)
_INSERT_REFRESH_TOKEN = insert(_REFRESH_TOKENS)
_TOUCH_SESSION = (
    update(_SESSIONS).where(_SESSIONS.c.id == bindparam("session_key")).values(last_used_at=bindparam("now"))
)
# The race guard of a refresh: of concurrent refreshes with one token, only one claims it.
_CLAIM_REFRESH_TOKEN = (
    update(_REFRESH_TOKENS)
    .where(_REFRESH_TOKENS.c.id == bindparam("token_key"), _REFRESH_TOKENS.c.used_at.is_(None))
    .values(used_at=bindparam("now"))
)
_ACCOUNT_BY_NAME = select(*ACCOUNT_COLUMNS).where(
    User.namespace == bindparam("namespace"), User.username == bindparam("username")
)
# A refresh token with its session and the few fields of its user that a refresh needs, for spending it.
_REFRESH_QUERY = (
    select(
        RefreshToken.id,
        RefreshToken.used_at,
        RefreshToken.expires_at,
        AuthSession.id,
        AuthSession.revoked_at,
        AuthSession.expires_at,
        User.is_active,
        User.id,
        User.namespace,
        User.username,
    )
    .join(AuthSession, RefreshToken.session_id == AuthSession.id)
    .join(User, AuthSession.user_id == User.id)
    .where(RefreshToken.token_hash == bindparam("digest"))
)


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


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 (a token type, not a secret)


def validate_input(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """Validate input with the same model the HTTP API uses; errors become one InvalidInput sentence."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidInput("; ".join(problems)) from None


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        # A refused or lost connection, or no free connection in the pool within DB_POOL_TIMEOUT_SECONDS.
        log.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
        raise DatabaseUnavailable() from None


def _try_normalize(namespace: object, username: object) -> tuple[str, str] | None:
    if not isinstance(namespace, str) or not isinstance(username, str):
        return None
    try:
        return normalize_namespace(namespace), normalize_username(username)
    except ValueError:
        return None


class UserService:
    """The one core behind the HTTP API and the CLI."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        storage: AvatarStorage | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine if engine is not None else make_engine(settings)
        self._read, self._write = make_sessionmakers(self.engine)
        self._single_reads = make_single_read_engine(self.engine)
        self._write_engine = self.engine.execution_options(write=True)
        # On SQLite (WAL) a single-row read is a read of a local file that waits for nothing: readers never wait
        # for writers, and the pool never makes a checkout wait. Callers on an event loop may run those reads
        # (`authenticate`, `database_ok`) in place: that costs less than handing them to a worker thread.
        self.reads_are_local = self.engine.dialect.name == "sqlite"
        self._sqlite_writers = threading.Lock() if self.reads_are_local else None
        # Threads (event loops) that keep a connection of their own for single reads: thread id -> the connection,
        # or None until the thread's next read opens one.
        self._thread_readers: dict[int, Connection | None] = {}
        self.storage: AvatarStorage = storage or LocalAvatarStorage(settings.upload_dir)
        self.clock: Clock = clock or utcnow
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def close(self) -> None:
        """Release the database connections."""
        while self._thread_readers:
            _, connection = self._thread_readers.popitem()
            if connection is not None:
                connection.close()
        self.engine.dispose()

    def keep_reader_for_this_thread(self) -> None:
        """On SQLite, let the calling thread keep one connection for its single-row reads until `close()`, instead
        of taking one from the pool for each. Meant for an event loop's thread, which runs those reads in place one
        at a time; other threads use the pool."""
        if self.reads_are_local:
            self._thread_readers.setdefault(threading.get_ident(), None)

    # -- plumbing ---------------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Session]:
        factory = self._write if write else self._read
        with _database_errors(), self._writer_turn(write), factory() as session, session.begin():
            yield session

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        """A write transaction for Core statements (the frequent writes: sessions and refresh tokens)."""
        with _database_errors(), self._writer_turn(True), self._write_engine.begin() as connection:
            yield connection

    @contextmanager
    def _writer_turn(self, write: bool) -> Iterator[None]:
        """On SQLite, one writer of this process at a time. SQLite allows one writer anyway; writers of one process
        queue on a lock here instead of polling the database's lock in its busy handler (sleeps of growing length,
        which stretch the wait far past the write). Other processes still meet at the database's lock."""
        if not write or self._sqlite_writers is None:
            yield
            return
        if not self._sqlite_writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            log.warning("database unavailable: no turn to write within the busy timeout")
            raise DatabaseUnavailable()
        try:
            yield
        finally:
            self._sqlite_writers.release()

    def _single_read(self, statement: Executable, params: dict[str, Any]) -> Row[*tuple[Any, ...]] | None:
        """One row of a single SELECT, outside a transaction."""
        thread = threading.get_ident()
        if thread not in self._thread_readers:
            with _database_errors(), self._single_reads.connect() as connection:
                return connection.execute(statement, params).first()
        with _database_errors():
            kept = self._thread_readers[thread]
            if kept is None:
                kept = self._thread_readers[thread] = self._single_reads.connect()
            try:
                return kept.execute(statement, params).first()
            except BaseException:
                # Whatever went wrong, the next read starts on a fresh connection.
                self._thread_readers[thread] = None
                kept.close()
                raise

    def _hash(self, password: str) -> str:
        return security.hash_password(password, self.settings.bcrypt_rounds)

    def _equalise_timing(self, password: str) -> None:
        """Spend the time of a real check, so an unknown account answers as slowly as a wrong password."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hash(_DUMMY_PASSWORD)
        security.check_password(password, self._dummy_hash)

    def profile_of(self, user: User | Account) -> Profile:
        """The public view of a user: never the hash or the lockout state."""
        avatar_url = user.avatar_url
        if user.avatar_key:
            avatar_url = f"{self.settings.public_base_url or ''}/uploads/{user.avatar_key}"
        return Profile(
            id=user.id,
            namespace=user.namespace,
            username=user.username,
            email=user.email,
            full_name=user.full_name,
            avatar_url=avatar_url,
            extra=dict(user.extra or {}),
            created_at=user.created_at,
            updated_at=user.updated_at,
        )

    def _find(self, namespace: str, username: str) -> Account | None:
        row = self._single_read(_ACCOUNT_BY_NAME, {"namespace": namespace, "username": username})
        return Account(*row) if row is not None else None

    def _find_user(self, namespace: str, username: str) -> Account:
        key = _try_normalize(namespace, username)
        user = self._find(*key) if key else None
        if user is None:
            raise UserNotFound(f"No user {username!r} in namespace {namespace!r}.")
        return user

    # -- registration -----------------------------------------------------------------------------------------

    def register(
        self,
        *,
        namespace: str,
        username: str,
        password: str,
        email: str | None = None,
        full_name: str | None = None,
        avatar_url: str | None = None,
        extra: dict[str, str] | None = None,
        ip: str | None = None,
    ) -> Profile:
        """Create an account; UsernameTaken or EmailTaken when the namespace already has one."""
        data = validate_input(
            RegisterRequest,
            {
                "namespace": namespace,
                "username": username,
                "password": password,
                "email": email,
                "full_name": full_name,
                "avatar_url": avatar_url,
                "extra": extra,
            },
        )
        self._check_policy(data.password, username=data.username, email=data.email)
        # A cheap look first, so a taken name costs no bcrypt; the unique constraints decide races below.
        self._raise_if_taken(data.namespace, data.username, data.email)
        password_hash = self._hash(data.password)
        now = self.clock()
        user = Account(
            id=uuid.uuid4(),
            namespace=data.namespace,
            username=data.username,
            password_hash=password_hash,
            email=data.email,
            full_name=data.full_name,
            avatar_url=data.avatar_url,
            avatar_key=None,
            extra=data.extra or {},
            is_active=True,
            failed_login_count=0,
            locked_until=None,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._write_transaction() as connection:
                connection.execute(_INSERT_USER, asdict(user))
        except IntegrityError:
            self._raise_if_taken(data.namespace, data.username, data.email)
            raise
        security_event("register", namespace=user.namespace, username=user.username, user_id=user.id, ip=ip)
        return self.profile_of(user)

    def _check_policy(self, password: str, *, username: str, email: str | None) -> None:
        check_password_policy(password, min_length=self.settings.password_min_length, username=username, email=email)

    def _raise_if_taken(self, namespace: str, username: str, email: str | None) -> None:
        if self._find(namespace, username) is not None:
            raise UsernameTaken()
        if email is not None and self._single_read(
            select(User.id).where(User.namespace == namespace, User.email == email), {}
        ):
            raise EmailTaken()

    # -- login and tokens -------------------------------------------------------------------------------------

    def login(
        self,
        *,
        namespace: str,
        username: str,
        password: str,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> TokenPair:
        """Check the password and start a session; the same InvalidCredentials for every kind of miss."""
        key = _try_normalize(namespace, username)
        user = self._find(*key) if key else None
        if user is None:
            self._equalise_timing(password)
            security_event("login_failed", namespace=key[0] if key else None, username=key[1] if key else None, ip=ip)
            raise InvalidCredentials()
        now = self.clock()
        self._check_password_or_count(user, password, now, ip=ip)
        if not user.is_active:
            raise UserDisabled()
        new_hash = None
        if security.hash_rounds(user.password_hash) != self.settings.bcrypt_rounds:
            new_hash = self._hash(password)
        pair, session_id = self._start_session(user, now=now, user_agent=user_agent, ip=ip, new_hash=new_hash)
        security_event(
            "login", namespace=user.namespace, username=user.username, user_id=user.id, session_id=session_id, ip=ip
        )
        return pair

    def _check_password_or_count(self, user: Account, password: str, now: datetime, *, ip: str | None) -> None:
        """Refuse a locked account outright; count a wrong password toward the lock."""
        if user.locked_until is not None and user.locked_until > now:
            security_event(
                "login_refused_locked", namespace=user.namespace, username=user.username, user_id=user.id, ip=ip
            )
            raise TooManyAttempts(math.ceil((user.locked_until - now).total_seconds()))
        if not security.check_password(password, user.password_hash):
            self._record_failure(user, now, ip=ip)
            raise InvalidCredentials()

    def _record_failure(self, user: Account, now: datetime, *, ip: str | None) -> None:
        """Count a failed password atomically; lock the account once the count reaches the limit."""
        settings = self.settings
        with self._transaction(write=True) as session:
            count = session.execute(
                update(User)
                .where(User.id == user.id)
                .values(failed_login_count=User.failed_login_count + 1)
                .returning(User.failed_login_count)
            ).scalar_one()
            wait = 0
            if count >= settings.login_max_failures:
                # Keycloak's shape: each further failure after a lock doubles the wait, up to the cap.
                doublings = min(count - settings.login_max_failures, 32)
                wait = min(settings.login_lockout_seconds * 2**doublings, settings.login_lockout_max_seconds)
                session.execute(
                    update(User).where(User.id == user.id).values(locked_until=now + timedelta(seconds=wait))
                )
        who = {"namespace": user.namespace, "username": user.username, "user_id": user.id, "ip": ip}
        security_event("login_failed", failures=count, **who)
        if wait:
            security_event("lockout", seconds=wait, **who)

    def _start_session(
        self,
        user: Account,
        *,
        now: datetime,
        user_agent: str | None = None,
        ip: str | None = None,
        new_hash: str | None = None,
        access_ttl: int | None = None,
        end_other_sessions: bool = False,
    ) -> tuple[TokenPair, uuid.UUID]:
        """One transaction: reset the failure count, store a new hash if any, open a session with its first token."""
        session_id = uuid.uuid4()
        session_expires = now + timedelta(seconds=self.settings.session_max_lifetime_seconds)
        refresh_token = security.new_refresh_token()
        with self._write_transaction() as connection:
            values: dict[str, Any] = {"failed_login_count": 0, "locked_until": None}
            if new_hash is not None:
                values["password_hash"] = new_hash
                values["updated_at"] = now
            connection.execute(_UPDATE_USER, {"user_key": user.id, **values})
            if end_other_sessions:
                self._revoke_sessions(connection, user.id, now)
            connection.execute(
                _INSERT_SESSION,
                {
                    "id": session_id,
                    "user_id": user.id,
                    "created_at": now,
                    "last_used_at": now,
                    "expires_at": session_expires,
                    "user_agent": (user_agent or None) and user_agent[:512],
                    "ip": (ip or None) and ip[:64],
                },
            )
            connection.execute(
                _INSERT_REFRESH_TOKEN, self._refresh_token_row(session_id, session_expires, refresh_token, now)
            )
        return self._pair(user, session_id, refresh_token, now, access_ttl), session_id

    @staticmethod
    def _revoke_sessions(
        session: Session | Connection, user_id: uuid.UUID, now: datetime, only: uuid.UUID | None = None
    ) -> int:
        """End the user's open sessions (or just one); returns how many were open."""
        condition = and_(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        if only is not None:
            condition = and_(condition, AuthSession.id == only)
        result = session.execute(update(AuthSession).where(condition).values(revoked_at=now))
        return cast("CursorResult[Any]", result).rowcount

    def _refresh_token_row(
        self, session_id: uuid.UUID, session_expires: datetime, token: str, now: datetime
    ) -> dict[str, Any]:
        """A session's next refresh token, as stored; it never outlives the session."""
        return {
            "id": uuid.uuid4(),
            "session_id": session_id,
            "token_hash": security.refresh_token_digest(token),
            "created_at": now,
            "used_at": None,
            "expires_at": min(now + timedelta(seconds=self.settings.refresh_token_ttl_seconds), session_expires),
        }

    def _access_token(
        self, user: TokenSubject | Account, session_id: uuid.UUID, now: datetime, ttl: int | None
    ) -> AccessToken:
        ttl = ttl or self.settings.access_token_ttl_seconds
        token = security.encode_access_token(
            key=self.settings.signing_key(),
            algorithm=self.settings.jwt_algorithm,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            user_id=user.id,
            namespace=user.namespace,
            username=user.username,
            session_id=session_id,
            now=now,
            ttl_seconds=ttl,
        )
        return AccessToken(access_token=token, expires_in=ttl)

    def _pair(
        self,
        user: TokenSubject | Account,
        session_id: uuid.UUID,
        refresh_token: str,
        now: datetime,
        access_ttl: int | None = None,
    ) -> TokenPair:
        access = self._access_token(user, session_id, now, access_ttl)
        return TokenPair(access_token=access.access_token, refresh_token=refresh_token, expires_in=access.expires_in)

    def refresh(self, refresh_token: str, *, ip: str | None = None) -> TokenPair:
        """Spend a refresh token for a new pair. A spent token presented again revokes its whole session."""
        digest = security.refresh_token_digest(refresh_token)
        now = self.clock()
        new_token = security.new_refresh_token()
        failure: UserServiceError | None = None
        with self._write_transaction() as connection:
            row = connection.execute(_REFRESH_QUERY, {"digest": digest}).first()
            if row is None:
                raise InvalidToken()
            token_id, used_at, token_expires, session_id, revoked_at, session_expires, is_active, *subject = row
            user = TokenSubject(*subject)
            if used_at is None:
                if not is_active:
                    raise UserDisabled()
                if revoked_at is not None:
                    raise InvalidToken()
                if session_expires <= now or token_expires <= now:
                    raise TokenExpired()
            claim = connection.execute(_CLAIM_REFRESH_TOKEN, {"token_key": token_id, "now": now})
            if claim.rowcount != 1:
                self._revoke_sessions(connection, user.id, now, only=session_id)
                failure = RefreshTokenReused()
            else:
                connection.execute(_TOUCH_SESSION, {"session_key": session_id, "now": now})
                connection.execute(
                    _INSERT_REFRESH_TOKEN, self._refresh_token_row(session_id, session_expires, new_token, now)
                )
        if failure is not None:
            security_event("refresh_reuse", namespace=user.namespace, user_id=user.id, session_id=session_id, ip=ip)
            raise failure
        return self._pair(user, session_id, new_token, now)

    def authenticate(self, access_token: str) -> Principal:
        """The active user an access token names, read on every call, and its session, which must be open."""
        now = self.clock()
        claims = security.decode_access_token(
            access_token,
            key=self.settings.signing_key(),
            algorithm=self.settings.jwt_algorithm,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            now=now,
        )
        row = self._single_read(_PRINCIPAL_QUERY, {"user_id": claims.user_id, "session_id": claims.session_id})
        if row is None:
            raise InvalidToken()
        *columns, revoked_at, expires_at = row
        user = Account(*columns)
        if user.namespace != claims.namespace:
            raise InvalidToken()
        # A disabled account says so (403), although disabling it also ended its sessions.
        if not user.is_active:
            raise UserDisabled()
        if revoked_at is not None or expires_at <= now:
            raise InvalidToken()
        return Principal(user=user, session_id=claims.session_id)

    def issue_tokens(
        self, *, namespace: str, username: str, ttl_seconds: int | None = None, with_refresh: bool = False
    ) -> TokenPair | AccessToken:
        """Tokens for an existing active user without a password (operators, through the CLI); a new session."""
        if ttl_seconds is not None and ttl_seconds < 1:
            raise InvalidInput("ttl must be at least 1 second")
        user = self._find_user(namespace, username)
        if not user.is_active:
            raise UserDisabled()
        pair, session_id = self._start_session(
            user, now=self.clock(), access_ttl=ttl_seconds, user_agent="user-service CLI"
        )
        security_event(
            "token_issued", namespace=user.namespace, username=user.username, user_id=user.id, session_id=session_id
        )
        if with_refresh:
            return pair
        return AccessToken(access_token=pair.access_token, expires_in=pair.expires_in)

    # -- sessions and passwords -------------------------------------------------------------------------------

    def logout(self, refresh_token: str, *, ip: str | None = None) -> None:
        """End the session a refresh token belongs to; unknown tokens are ignored (nothing to end)."""
        digest = security.refresh_token_digest(refresh_token)
        now = self.clock()
        with self._transaction(write=True) as session:
            row = session.execute(
                select(AuthSession.id, AuthSession.user_id, User.namespace)
                .join(RefreshToken, RefreshToken.session_id == AuthSession.id)
                .join(User, User.id == AuthSession.user_id)
                .where(RefreshToken.token_hash == digest)
            ).first()
            ended = self._revoke_sessions(session, row.user_id, now, only=row.id) if row else 0
        if row is not None and ended:
            security_event("logout", namespace=row.namespace, user_id=row.user_id, session_id=row.id, ip=ip)

    def logout_all(self, principal: Principal, *, ip: str | None = None) -> int:
        """End every session of the user; their access tokens fail at once. Returns how many ended."""
        with self._transaction(write=True) as session:
            ended = self._revoke_sessions(session, principal.user.id, self.clock())
        security_event(
            "logout_all",
            namespace=principal.user.namespace,
            user_id=principal.user.id,
            session_id=principal.session_id,
            sessions=ended,
            ip=ip,
        )
        return ended

    def list_sessions(self, principal: Principal) -> list[SessionInfo]:
        """The user's open sessions, newest first; `current` marks the caller's."""
        now = self.clock()
        with self._transaction() as session:
            rows = session.scalars(
                select(AuthSession)
                .where(
                    AuthSession.user_id == principal.user.id,
                    AuthSession.revoked_at.is_(None),
                    AuthSession.expires_at > now,
                )
                .order_by(AuthSession.created_at.desc(), AuthSession.id)
            ).all()
        return [
            SessionInfo(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                expires_at=row.expires_at,
                user_agent=row.user_agent,
                ip=row.ip,
                current=row.id == principal.session_id,
            )
            for row in rows
        ]

    def end_session(self, principal: Principal, session_id: uuid.UUID, *, ip: str | None = None) -> None:
        """End one of the user's own open sessions; anyone else's is SessionNotFound, like a missing one."""
        now = self.clock()
        with self._transaction(write=True) as session:
            ended = self._revoke_sessions(session, principal.user.id, now, only=session_id)
        if not ended:
            raise SessionNotFound()
        security_event(
            "session_ended", namespace=principal.user.namespace, user_id=principal.user.id, session_id=session_id, ip=ip
        )

    def change_password(
        self,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> TokenPair:
        """Replace the password after checking the current one; every session ends and a new one starts."""
        user = principal.user
        now = self.clock()
        self._check_password_or_count(user, current_password, now, ip=ip)
        self._check_policy(new_password, username=user.username, email=user.email)
        pair, session_id = self._start_session(
            user, now=now, user_agent=user_agent, ip=ip, new_hash=self._hash(new_password), end_other_sessions=True
        )
        security_event("password_changed", namespace=user.namespace, user_id=user.id, session_id=session_id, ip=ip)
        return pair

    def reset_password(self, *, namespace: str, username: str, new_password: str) -> None:
        """Set a new password without the old one (operators); ends every session and clears a lock."""
        user = self._find_user(namespace, username)
        self._check_policy(new_password, username=user.username, email=user.email)
        new_hash = self._hash(new_password)
        now = self.clock()
        with self._transaction(write=True) as session:
            session.execute(
                update(User)
                .where(User.id == user.id)
                .values(password_hash=new_hash, failed_login_count=0, locked_until=None, updated_at=now)
            )
            self._revoke_sessions(session, user.id, now)
        security_event("password_reset", namespace=user.namespace, user_id=user.id)

    def prune_sessions(self, *, keep_revoked_seconds: int = 7 * 86_400) -> int:
        """Delete sessions past their absolute lifetime, or ended longer ago than `keep_revoked_seconds`."""
        now = self.clock()
        cutoff = now - timedelta(seconds=keep_revoked_seconds)
        with self._transaction(write=True) as session:
            result = session.execute(
                delete(AuthSession).where(or_(AuthSession.expires_at <= now, AuthSession.revoked_at <= cutoff))
            )
            # Spent or expired tokens of sessions that stay open are not needed once expired.
            session.execute(delete(RefreshToken).where(RefreshToken.expires_at <= now))
        return cast("CursorResult[Any]", result).rowcount

    # -- profile ----------------------------------------------------------------------------------------------

    def update_profile(self, user_id: uuid.UUID, patch: ProfilePatch | dict[str, Any]) -> Profile:
        """Apply a JSON Merge Patch inside one transaction holding the user's row lock."""
        if not isinstance(patch, ProfilePatch):
            patch = validate_input(ProfilePatch, patch)
        fields = patch.model_fields_set
        old_key = None
        try:
            with self._transaction(write=True) as session:
                user = session.get(User, user_id, with_for_update=True)
                if user is None:
                    raise InvalidToken()
                if "email" in fields:
                    user.email = patch.email
                if "full_name" in fields:
                    user.full_name = patch.full_name
                if "avatar_url" in fields:
                    old_key, user.avatar_key, user.avatar_url = user.avatar_key, None, patch.avatar_url
                if "extra" in fields:
                    user.extra = merge_extra(user.extra or {}, patch.extra)
                user.updated_at = self.clock()
        except IntegrityError:
            raise EmailTaken() from None
        if old_key:
            self.storage.delete(old_key)
        return self.profile_of(user)

    def set_avatar(self, user_id: uuid.UUID, image: bytes | BinaryIO) -> Profile:
        """Store an uploaded avatar once its bytes prove to be an accepted image; the old file is deleted.

        `image` is the bytes or a seekable binary file, which is read in chunks and never whole into memory.
        """
        source = io.BytesIO(image) if isinstance(image, bytes) else image
        if source.seek(0, io.SEEK_END) > self.settings.avatar_max_bytes:
            raise FileTooLarge(f"The file is larger than {self.settings.avatar_max_bytes} bytes.")
        source.seek(0)
        extension = detect_image(source, max_pixels=self.settings.avatar_max_pixels)
        source.seek(0)
        key = self.storage.save(source, extension)
        try:
            with self._transaction(write=True) as session:
                user = session.get(User, user_id, with_for_update=True)
                if user is None:
                    raise InvalidToken()
                old_key, user.avatar_key, user.avatar_url = user.avatar_key, key, None
                user.updated_at = self.clock()
        except BaseException:
            self.storage.delete(key)
            raise
        if old_key:
            self.storage.delete(old_key)
        return self.profile_of(user)

    # -- administration ---------------------------------------------------------------------------------------

    def get_user(self, *, namespace: str, username: str) -> Profile:
        return self.profile_of(self._find_user(namespace, username))

    def set_active(self, *, namespace: str, username: str, active: bool) -> Profile:
        """Enable or disable an account. Disabling ends every session (ASVS 5.0 7.4.2): the account's tokens stop
        working at once and stay dead when it is enabled again."""
        user = self._find_user(namespace, username)
        now = self.clock()
        with self._transaction(write=True) as session:
            session.execute(update(User).where(User.id == user.id).values(is_active=active, updated_at=now))
            if not active:
                self._revoke_sessions(session, user.id, now)
        security_event("user_enabled" if active else "user_disabled", namespace=user.namespace, user_id=user.id)
        return self.get_user(namespace=namespace, username=username)

    def delete_user(self, *, namespace: str, username: str) -> None:
        """Delete an account, its sessions and its avatar file."""
        user = self._find_user(namespace, username)
        with self._transaction(write=True) as session:
            session.execute(delete(User).where(User.id == user.id))
        if user.avatar_key:
            self.storage.delete(user.avatar_key)

    def database_ok(self) -> bool:
        try:
            self._single_read(_PING, {})
        except DatabaseUnavailable:
            return False
        return True


def merge_extra(current: dict[str, str], patch: dict[str, str | None] | None) -> dict[str, str]:
    """RFC 7396 on a flat map: null clears everything, a key set to null is removed, others are set."""
    if patch is None:
        return {}
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > EXTRA_MAX_KEYS:
        raise InvalidInput(f"extra may hold at most {EXTRA_MAX_KEYS} keys", code="too_many_extra_keys")
    return merged
