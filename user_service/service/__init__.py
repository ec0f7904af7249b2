"""The service core: registration, login, tokens, sessions, profiles and avatars. Knows nothing of HTTP or terminals.

`UserService` is the one entry point, behind the HTTP API, the CLI and the embedding API. It holds one `Context`
and hands each call to the domain module that owns the rule:

    database.py    the plumbing: pools, the event loop's kept reader, write transactions, driver errors
    statements.py  every SQL statement, built once
    context.py     the shared context and the records passed around (Account, Principal)
    accounts.py    registration, lookup, operators' changes to an account
    logins.py      password check, lockout, password change
    mfa.py         the second factor: TOTP enrolment, recovery codes, the second step of a login
    sessions.py    sessions, refresh-token rotation and reuse, logout
    tokens.py      access tokens: issuing and checking
    keys.py        signing keys: creation, rotation, the in-memory copy, the JWKS
    profiles.py    profiles, merge patches, avatars
    directory.py   listing and searching accounts, one account's state, namespaces
    transfer.py    exporting and importing users with their bcrypt hashes
    admin_keys.py  the keys app back ends call the admin API with
    recovery.py    one-time tokens: password resets and email verification
    admin.py       what an admin key does to a namespace's users

Every method is blocking (database calls, bcrypt); the HTTP layer runs them in a worker thread, except the
single-row reads on SQLite (see `reads_are_local`), and `authenticate_remembered`, the one coroutine: the token
check of a token seen before, whose read an event loop awaits. Input arrives validated, as the models of
`schemas.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any, BinaryIO

from sqlalchemy import Engine

from user_service.config import Settings
from user_service.schemas import (
    AdminSessionInfo,
    AdminUserCreate,
    AdminUserPatch,
    ImportedUser,
    MfaChallenge,
    NamespaceCount,
    OneTimeTokenOut,
    Profile,
    ProfilePatch,
    RecoveryCodes,
    RegisterRequest,
    SessionInfo,
    TokenPair,
    TotpEnrolment,
    UserDetail,
    UserPage,
)
from user_service.service import (
    accounts,
    admin,
    admin_keys,
    directory,
    keys,
    logins,
    mfa,
    profiles,
    recovery,
    sessions,
    tokens,
    transfer,
)
from user_service.service.admin_keys import AdminKeyInfo, AdminPrincipal
from user_service.service.context import Account, Clock, Context, Passwords, Principal, TokenSubject, utcnow
from user_service.service.database import Database
from user_service.service.import_batch import ImportReport, ProblemSink
from user_service.service.profiles import merge_extra
from user_service.service.transfer import ProgressSink
from user_service.storage import AvatarStorage, CachedReachability, storage_from_settings

__all__ = [
    "Account",
    "AdminKeyInfo",
    "AdminPrincipal",
    "Clock",
    "Principal",
    "TokenSubject",
    "UserService",
    "merge_extra",
    "utcnow",
]


class UserService:
    """The one core behind the HTTP API and the CLI; a context manager that closes its connections on exit."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        storage: AvatarStorage | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.db = Database(settings, engine=engine)
        self.storage: AvatarStorage = storage or storage_from_settings(settings)
        self._storage_reachable = CachedReachability(self.storage)
        self.clock: Clock = clock or utcnow
        self.context = Context(
            settings=settings,
            db=self.db,
            storage=self.storage,
            clock=self.clock,
            passwords=Passwords(settings.bcrypt_rounds),
        )

    @property
    def engine(self) -> Engine:
        return self.db.engine

    @property
    def reads_are_local(self) -> bool:
        """Whether single-row reads are local (SQLite) and cheap enough to run on an event loop."""
        return self.db.reads_are_local

    def close(self) -> None:
        """Release the database connections."""
        self.db.close()

    def __enter__(self) -> UserService:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def keep_reader_for_this_thread(self) -> None:
        """On SQLite, let the calling thread (an event loop's) keep one connection for its single-row reads."""
        self.db.keep_reader_for_this_thread()

    def database_ok(self) -> bool:
        return self.db.ping()

    def storage_ok(self) -> bool:
        """Whether the avatar storage was reachable when last probed (at most one probe every few seconds)."""
        return self._storage_reachable()

    def profile_of(self, user: Account) -> Profile:
        """The public view of a user: never the hash or the lockout state."""
        return profiles.profile_of(self.context, user)

    # -- accounts -----------------------------------------------------------------------------------------------

    def register(self, data: RegisterRequest, *, ip: str | None = None, by_operator: bool = False) -> Profile:
        """Create an account; UsernameTaken or EmailTaken when the namespace already has one. Self-service
        registration follows REGISTRATION_ENABLED and REGISTRATION_NAMESPACES; `by_operator` bypasses them."""
        return accounts.register(self.context, data, ip=ip, by_operator=by_operator)

    def get_user(self, *, namespace: str, username: str) -> Profile:
        return profiles.profile_of(self.context, accounts.find_user(self.context, namespace, username))

    def set_active(self, *, namespace: str, username: str, active: bool) -> Profile:
        """Enable or disable an account; disabling ends every session at once."""
        return accounts.set_active(self.context, namespace=namespace, username=username, active=active)

    def delete_user(self, *, namespace: str, username: str) -> None:
        """Delete an account, its sessions and its avatar file."""
        accounts.delete_user(self.context, namespace=namespace, username=username)

    def reset_password(self, *, namespace: str, username: str, new_password: str) -> None:
        """Set a new password without the old one (operators); ends every session and clears a lock."""
        accounts.reset_password(self.context, namespace=namespace, username=username, new_password=new_password)

    def issue_tokens(self, *, namespace: str, username: str, ttl_seconds: int | None = None) -> TokenPair:
        """Tokens for an existing active user without a password (operators); a new session."""
        tokens.prepare(self.context)
        return accounts.issue_tokens(self.context, namespace=namespace, username=username, ttl_seconds=ttl_seconds)

    # -- the directory ------------------------------------------------------------------------------------------

    def list_users(
        self,
        namespace: str,
        *,
        search: str | None = None,
        active: bool | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> UserPage:
        """One page of a namespace's users in order of creation (keyset pagination; `after` is a page's `next`)."""
        return directory.list_users(self.context, namespace, search=search, active=active, limit=limit, after=after)

    def user_detail(self, *, namespace: str, username: str) -> UserDetail:
        """One account's profile and state (active, lock, failures, last login, live sessions)."""
        return directory.user_detail(self.context, namespace, username)

    def namespaces(self) -> list[NamespaceCount]:
        """Every namespace holding accounts, with its number of users."""
        return directory.namespaces(self.context)

    def revoke_sessions(self, *, namespace: str, username: str, actor: str = "operator") -> int:
        """End every session of the user at once; returns how many were open."""
        return directory.revoke_sessions(self.context, namespace, username, actor=actor)

    # -- moving users in and out ------------------------------------------------------------------------------------

    def create_imported_user(self, data: ImportedUser) -> Profile:
        """Store one user brought from another system, with its bcrypt hash (or a plain password, hashed) and its id
        and times as given; UsernameTaken, EmailTaken or UserIdTaken when one is already used."""
        return transfer.create_user(self.context, data)

    def export_users(
        self, *, namespace: str | None = None, include_password_hashes: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every user (of one namespace, or all) as a JSON-ready record, streamed page by page."""
        return transfer.export_users(self.context, namespace=namespace, include_password_hashes=include_password_hashes)

    def export_lines(self, *, namespace: str | None = None, include_password_hashes: bool = False) -> Iterator[str]:
        """Every user (of one namespace, or all) as one line of JSON, streamed page by page: what `export` writes."""
        return transfer.export_lines(self.context, namespace=namespace, include_password_hashes=include_password_hashes)

    def import_users(
        self,
        source: BinaryIO,
        *,
        on_problem: ProblemSink,
        upsert: bool = False,
        dry_run: bool = False,
        skip_invalid: bool = False,
        on_progress: ProgressSink | None = None,
    ) -> ImportReport:
        """Import JSON Lines of users in one transaction: all of the file or, when a line is refused (reported to
        `on_problem`), none of it unless `skip_invalid`."""
        return transfer.import_users(
            self.context,
            source,
            on_problem=on_problem,
            upsert=upsert,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            on_progress=on_progress,
        )

    # -- login, tokens, sessions ------------------------------------------------------------------------------------

    def login(
        self,
        *,
        namespace: str,
        username: str,
        password: str,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> TokenPair | MfaChallenge:
        """Check the password and start a session; the same InvalidCredentials for every kind of miss. An account
        with a second factor gets an MfaChallenge instead, to complete with `login_mfa`; one in a namespace of
        MFA_REQUIRED_NAMESPACES without a factor gets MfaEnrolmentRequired, carrying a token limited to enrolment."""
        tokens.prepare(self.context)
        return logins.login(
            self.context, namespace=namespace, username=username, password=password, user_agent=user_agent, ip=ip
        )

    def login_mfa(
        self, *, mfa_token: str, code: str, user_agent: str | None = None, ip: str | None = None
    ) -> TokenPair:
        """The second step of a login: spend the challenge's mfa_token with a TOTP or recovery code for a token pair
        at aal2. Wrong codes count toward the same lockout as wrong passwords."""
        tokens.prepare(self.context)
        return mfa.complete_login(self.context, mfa_token, code, user_agent=user_agent, ip=ip)

    def enrol_totp(self, principal: Principal, *, ip: str | None = None) -> TotpEnrolment:
        """A new pending TOTP secret with its otpauth:// URI and QR code; replaces a pending one."""
        return mfa.enrol(self.context, principal, ip=ip)

    def confirm_totp(self, principal: Principal, code: str, *, ip: str | None = None) -> RecoveryCodes:
        """Turn the pending factor on with a code from it; every other session ends; the recovery codes, once."""
        return mfa.confirm(self.context, principal, code, ip=ip)

    def remove_totp(
        self, principal: Principal, *, code: str | None = None, password: str | None = None, ip: str | None = None
    ) -> Profile:
        """Remove the second factor and its recovery codes, proven by a code or the password."""
        return mfa.remove(self.context, principal, code=code, password=password, ip=ip)

    def reset_mfa(self, *, namespace: str, username: str, actor: str = "operator") -> tuple[bool, int]:
        """Operators: remove the user's second factor and end their sessions; whether there was one, and how many
        sessions ended."""
        return mfa.reset(self.context, namespace=namespace, username=username, actor=actor)

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
        tokens.prepare(self.context)
        return logins.change_password(
            self.context,
            principal,
            current_password=current_password,
            new_password=new_password,
            user_agent=user_agent,
            ip=ip,
        )

    def authenticate(self, access_token: str, *, enrolment: bool = False) -> Principal:
        """The active user an access token names, and its open session. A token limited to second-factor enrolment
        is refused (MfaEnrolmentRequired) unless `enrolment` allows it."""
        return tokens.authenticate(self.context, access_token, enrolment=enrolment)

    async def authenticate_remembered(self, access_token: str) -> Principal | None:
        """`authenticate` for a token this process has verified before, without blocking the event loop (its one
        read awaited there); None for any other token: check it with `authenticate` in a worker thread."""
        return await tokens.authenticate_remembered(self.context, access_token)

    def refresh(self, refresh_token: str, *, ip: str | None = None) -> TokenPair:
        """Spend a refresh token for a new pair; a spent token presented again revokes its whole session."""
        tokens.prepare(self.context)
        return sessions.refresh(self.context, refresh_token, ip=ip)

    def logout(self, refresh_token: str, *, ip: str | None = None) -> None:
        """End the session a refresh token belongs to; unknown tokens are ignored."""
        sessions.logout(self.context, refresh_token, ip=ip)

    def logout_all(self, principal: Principal, *, ip: str | None = None) -> int:
        """End every session of the user; returns how many ended."""
        return sessions.logout_all(self.context, principal, ip=ip)

    def list_sessions(self, principal: Principal) -> list[SessionInfo]:
        """The user's open sessions, newest first."""
        return sessions.list_sessions(self.context, principal)

    def end_session(self, principal: Principal, session_id: uuid.UUID, *, ip: str | None = None) -> None:
        """End one of the user's own open sessions."""
        sessions.end_session(self.context, principal, session_id, ip=ip)

    def prune_sessions(self, *, keep_revoked_seconds: int = 7 * 86_400) -> int:
        """Delete expired sessions, and ended ones older than `keep_revoked_seconds`; returns how many."""
        return sessions.prune(self.context, keep_revoked_seconds=keep_revoked_seconds)

    # -- signing keys ---------------------------------------------------------------------------------------------

    def prepare_keys(self) -> None:
        """Create the first signing keys if there are none, and open the current one: a ConfigurationError names
        the problem (a JWT_SECRET_KEY that cannot decrypt them) before any request arrives."""
        tokens.prepare(self.context)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of the published public keys (empty with an HS* algorithm)."""
        return keys.jwks(self.context)

    def rotate_keys(self) -> keys.KeyInfo:
        """The next key becomes current, a new next key is made, the old current one is retired."""
        return keys.rotate(self.context)

    def list_keys(self) -> list[keys.KeyInfo]:
        """Every signing key, oldest first, without private material."""
        return keys.list_keys(self.context)

    # -- profile --------------------------------------------------------------------------------------------------

    def update_profile(self, user_id: uuid.UUID, patch: ProfilePatch) -> Profile:
        """Apply a JSON Merge Patch inside one transaction holding the user's row lock."""
        return profiles.update_profile(self.context, user_id, patch)

    def set_avatar(self, user_id: uuid.UUID, image: bytes | BinaryIO) -> Profile:
        """Store an uploaded avatar, re-encoded without metadata, once its bytes prove to be an accepted image; the
        old one is deleted."""
        return profiles.set_avatar(self.context, user_id, image)

    def delete_avatar(self, user_id: uuid.UUID) -> Profile:
        """Clear the user's avatar; a stored one is deleted from the storage."""
        return profiles.delete_avatar(self.context, user_id)

    # -- password resets and email verification ---------------------------------------------------------------

    def complete_password_reset(self, token: str, new_password: str, *, ip: str | None = None) -> None:
        """Spend a reset token for a new password; every session ends, a lock is lifted, no session starts."""
        recovery.reset_password(self.context, token, new_password, ip=ip)

    def verify_email(self, token: str, *, ip: str | None = None) -> Profile:
        """Spend a verification token; the user's email is verified if it is still the one the token was for."""
        return recovery.verify_email(self.context, token, ip=ip)

    # -- admin keys and the admin API -----------------------------------------------------------------------------

    def create_admin_key(self, *, name: str, namespace: str | None = None) -> tuple[AdminKeyInfo, str]:
        """A new admin key (returned once, stored as a digest), for one namespace or, without one, for all."""
        return admin_keys.create(self.context, name=name, namespace=namespace)

    def admin_keys(self) -> list[AdminKeyInfo]:
        """Every admin key, revoked ones included."""
        return admin_keys.list_keys(self.context)

    def revoke_admin_key(self, *, name: str) -> None:
        """End an admin key at once, on every instance."""
        admin_keys.revoke(self.context, name=name)

    def authenticate_admin(self, key: str | None) -> AdminPrincipal:
        """The live admin key presented; NotAuthenticated or InvalidToken otherwise."""
        return admin_keys.authenticate(self.context, key)

    def admin_list_users(
        self,
        key: AdminPrincipal,
        namespace: str,
        *,
        search: str | None = None,
        active: bool | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> UserPage:
        return admin.list_users(self.context, key, namespace, search=search, active=active, limit=limit, after=after)

    def admin_create_user(self, key: AdminPrincipal, namespace: str, data: AdminUserCreate) -> Profile:
        return admin.create_user(self.context, key, namespace, data)

    def admin_user_detail(self, key: AdminPrincipal, *, namespace: str, username: str) -> UserDetail:
        return admin.user_detail(self.context, key, namespace, username)

    def admin_update_user(
        self, key: AdminPrincipal, *, namespace: str, username: str, patch: AdminUserPatch
    ) -> Profile:
        return admin.update_user(self.context, key, namespace, username, patch)

    def admin_delete_user(self, key: AdminPrincipal, *, namespace: str, username: str) -> None:
        admin.delete_user(self.context, key, namespace, username)

    def admin_list_sessions(self, key: AdminPrincipal, *, namespace: str, username: str) -> list[AdminSessionInfo]:
        return admin.list_sessions(self.context, key, namespace, username)

    def admin_end_sessions(self, key: AdminPrincipal, *, namespace: str, username: str) -> int:
        return admin.end_sessions(self.context, key, namespace, username)

    def admin_reset_mfa(self, key: AdminPrincipal, *, namespace: str, username: str) -> None:
        """Remove the user's second factor and end their sessions."""
        admin.reset_mfa(self.context, key, namespace, username)

    def admin_issue_token(
        self, key: AdminPrincipal, *, namespace: str, username: str, kind: recovery.TokenKind
    ) -> OneTimeTokenOut:
        """A password-reset or email-verification token for the app's back end to deliver."""
        return admin.issue_token(self.context, key, namespace, username, kind)
