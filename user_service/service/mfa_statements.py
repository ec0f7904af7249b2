"""The SQL of second factors: TOTP factors, recovery codes and login challenges, built once like `statements.py`.

Every check that must hold under concurrency is in the statement's WHERE: a confirmation, a time step, a recovery
code and a challenge are each claimed by one conditional UPDATE whose row count says who won.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update

from user_service.models import MfaChallenge, MfaFactor, MfaRecoveryCode

MFA_FACTORS, RECOVERY_CODES, CHALLENGES = (
    cast("Table", model.__table__) for model in (MfaFactor, MfaRecoveryCode, MfaChallenge)
)

# -- factors ------------------------------------------------------------------------------------------------------

FACTOR = select(
    MFA_FACTORS.c.id,
    MFA_FACTORS.c.secret,
    MFA_FACTORS.c.confirmed_at,
    MFA_FACTORS.c.last_used_step,
).where(MFA_FACTORS.c.user_id == bindparam("user_id"))
INSERT_FACTOR = insert(MFA_FACTORS)
DELETE_PENDING_FACTOR = delete(MFA_FACTORS).where(
    MFA_FACTORS.c.user_id == bindparam("owner_key"), MFA_FACTORS.c.confirmed_at.is_(None)
)
DELETE_FACTOR = delete(MFA_FACTORS).where(MFA_FACTORS.c.user_id == bindparam("owner_key"))
# Of two confirmations racing, one matches; a re-enrolment meanwhile gave the factor a new id, so neither does.
CONFIRM_FACTOR = (
    update(MFA_FACTORS)
    .where(
        MFA_FACTORS.c.user_id == bindparam("owner_key"),
        MFA_FACTORS.c.id == bindparam("factor_key"),
        MFA_FACTORS.c.confirmed_at.is_(None),
    )
    .values(confirmed_at=bindparam("now"))
)
# A TOTP code is accepted once: only for a time step after the newest one accepted so far.
CLAIM_STEP = (
    update(MFA_FACTORS)
    .where(
        MFA_FACTORS.c.user_id == bindparam("owner_key"),
        MFA_FACTORS.c.id == bindparam("factor_key"),
        or_(MFA_FACTORS.c.last_used_step.is_(None), MFA_FACTORS.c.last_used_step < bindparam("step")),
    )
    .values(last_used_step=bindparam("step"))
)

# -- recovery codes -----------------------------------------------------------------------------------------------

INSERT_RECOVERY_CODE = insert(RECOVERY_CODES)
DELETE_RECOVERY_CODES = delete(RECOVERY_CODES).where(RECOVERY_CODES.c.user_id == bindparam("owner_key"))
RECOVERY_CODE = select(RECOVERY_CODES.c.id, RECOVERY_CODES.c.used_at).where(
    RECOVERY_CODES.c.user_id == bindparam("user_id"), RECOVERY_CODES.c.code_hash == bindparam("digest")
)
SPEND_RECOVERY_CODE = (
    update(RECOVERY_CODES)
    .where(RECOVERY_CODES.c.id == bindparam("code_key"), RECOVERY_CODES.c.used_at.is_(None))
    .values(used_at=bindparam("now"))
)
RECOVERY_CODES_LEFT = select(RECOVERY_CODES.c.id).where(
    RECOVERY_CODES.c.user_id == bindparam("user_id"), RECOVERY_CODES.c.used_at.is_(None)
)

# -- login challenges ---------------------------------------------------------------------------------------------

INSERT_CHALLENGE = insert(CHALLENGES)
CHALLENGE = select(
    CHALLENGES.c.id,
    CHALLENGES.c.user_id,
    CHALLENGES.c.password_digest,
    CHALLENGES.c.expires_at,
    CHALLENGES.c.used_at,
).where(CHALLENGES.c.token_hash == bindparam("digest"))
# The race guard of the second step: of concurrent requests with one mfa_token, one spends it.
SPEND_CHALLENGE = (
    update(CHALLENGES)
    .where(
        CHALLENGES.c.id == bindparam("challenge_key"),
        CHALLENGES.c.used_at.is_(None),
        CHALLENGES.c.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
)
DELETE_CHALLENGES = delete(CHALLENGES).where(CHALLENGES.c.user_id == bindparam("owner_key"))
PRUNE_CHALLENGES = delete(CHALLENGES).where(CHALLENGES.c.expires_at <= bindparam("now"))
