"""Who may connect and join: Realtime's JWT checks (`user_socket.ex`, `channels_authorization.ex`).

Two layers, as on Supabase:

* the API gateway swaps the opaque `sb_publishable_...` / `sb_secret_...` keys in the `apikey`
  query parameter for the matching legacy JWT (kong.yml / ApiProxy.ts);
* Realtime then requires a JWT signed with the project secret that carries `role` and `exp`,
  both at the handshake (HTTP 401 before the upgrade) and for every channel join or
  `access_token` update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from supaworker_local.config import StackConfig

# Realtime verifies HS* tokens with the project secret (JwtVerification); no leeway on `exp`.
_ALGORITHMS = ["HS256", "HS384", "HS512"]

Claims = dict[str, Any]


@dataclass(eq=False)
class AuthError(Exception):
    """A refused token. `body` is the JSON the handshake answers with."""

    status: int
    message: str
    # Errors raised by the gateway's key translation use Kong's `message` field, the ones
    # raised by Realtime itself use `error` (user_socket.ex `handle_error`).
    field: str = "error"
    # Realtime's log code, prefixed to the reason of a refused join ("InvalidJWTToken: ...").
    code: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, str]:
        return {self.field: self.message}

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


def translate_api_key(config: StackConfig, key: str, user_agent: str | None) -> str:
    """The gateway rule for Realtime: an `sb_` key in `apikey` becomes its role's JWT."""
    if not key.startswith("sb_"):
        return key
    if key == config.secret_key:
        if user_agent and user_agent.startswith("Mozilla/"):
            raise AuthError(
                401, "Secret API keys can only be used in a protected environment", "message"
            )
        return config.service_role_key
    if key == config.publishable_key:
        return config.anon_key
    raise AuthError(401, "Invalid API key", "message")


def connect_token(
    config: StackConfig, apikey: str | None, x_api_key: str | None, user_agent: str | None
) -> str:
    """The token a socket connects with: the `x-api-key` header wins over `?apikey=`."""
    token = x_api_key or apikey
    if not token:
        raise AuthError(401, "API key is missing")
    return translate_api_key(config, token.strip(), user_agent)


def verify(secret: str, token: str, *, now: float | None = None) -> Claims:
    """Claims of a valid token, else AuthError with the message Realtime's handshake uses."""
    claims = _decode(secret, token)
    _require_role_and_exp(claims)
    if int(claims["exp"]) <= int(now if now is not None else time.time()):
        raise AuthError(401, "Token has expired")
    return claims


def verify_for_channel(secret: str, token: str, *, now: float | None = None) -> Claims:
    """Like `verify`, with the join-time error codes (`realtime_channel.ex` `confirm_token`)."""
    try:
        claims = _decode(secret, token)
    except AuthError as exc:
        malformed = exc.message == "The token provided is not a valid JWT"
        exc.code = "MalformedJWT" if malformed else "JwtSignatureError"
        raise
    try:
        _require_role_and_exp(claims)
    except AuthError as exc:
        exc.code = "InvalidJWTToken"
        raise
    left = seconds_left(claims, now=now)
    if left <= 0:
        raise AuthError(401, f"Token has expired {-left} seconds ago", code="InvalidJWTToken")
    return claims


def seconds_left(claims: Claims, *, now: float | None = None) -> int:
    return int(claims["exp"]) - int(now if now is not None else time.time())


def _decode(secret: str, token: str) -> Claims:
    try:
        claims: Claims = jwt.decode(
            token,
            secret,
            algorithms=_ALGORITHMS,
            # Expiry is checked by the callers so that they can word the error as Realtime does.
            options={
                "verify_aud": False,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise AuthError(401, "Failed to validate JWT signature") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise AuthError(401, "Failed to validate JWT signature") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, "The token provided is not a valid JWT") from exc
    return claims


def _require_role_and_exp(claims: Claims) -> None:
    role, exp = claims.get("role"), claims.get("exp")
    if not isinstance(role, str) or not role or not isinstance(exp, int | float):
        raise AuthError(401, "Fields `role` and `exp` are required in JWT")
