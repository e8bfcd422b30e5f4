"""API keys and user tokens for the local stack, minted the way Supabase mints them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

TEN_YEARS = 10 * 365 * 24 * 3600


def mint(secret: str, role: str, *, ttl: int = TEN_YEARS, **claims: Any) -> str:
    """An HS256 JWT like Supabase's legacy `anon` / `service_role` keys.

    Claims: iss, ref, role, iat, exp, plus any given."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": "supabase-demo",
        "ref": "local",
        "role": role,
        "iat": now,
        "exp": now + ttl,
    }
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


def anon_key(secret: str) -> str:
    return mint(secret, "anon")


def service_role_key(secret: str) -> str:
    return mint(secret, "service_role")


def user_token(
    secret: str,
    user_id: uuid.UUID | str,
    email: str,
    *,
    ttl: int = 3600,
    app_metadata: dict[str, Any] | None = None,
) -> str:
    """An access token as GoTrue issues it for a signed-in user."""
    return mint(
        secret,
        "authenticated",
        ttl=ttl,
        iss="http://127.0.0.1/auth/v1",
        sub=str(user_id),
        aud="authenticated",
        email=email,
        app_metadata=app_metadata or {"provider": "email", "providers": ["email"]},
        user_metadata={},
        aal="aal1",
        session_id=str(uuid.uuid4()),
        is_anonymous=False,
    )


def decode(secret: str, token: str) -> dict[str, Any]:
    """Verify an HS256 token; raises `jwt.InvalidTokenError` when forged, expired or malformed."""
    claims: dict[str, Any] = jwt.decode(
        token, secret, algorithms=["HS256"], options={"verify_aud": False}, leeway=30
    )
    return claims
