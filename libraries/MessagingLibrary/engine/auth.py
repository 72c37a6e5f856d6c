"""Test users' credentials: derived opaque tokens, minted JWTs, and test-user endpoints.

Nothing here logs, and no error message carries a token, a secret or a bypass key.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import jwt

#: The signing secret the built-in mock uses in the netra dialect unless told otherwise
#: (``apex-mock --jwt-secret`` / ``APEX_JWT_SECRET``). For development only: it is public.
DEVELOPMENT_JWT_SECRET = "apex-acceptance-development-secret"
#: How long a minted JWT is valid. The platform's own client refuses a token that expires
#: within 5 minutes; an hour outlasts any suite.
JWT_LIFETIME_S = 3600
#: The header that carries the end-to-end test login's bypass key (``APEX_E2E_BYPASS_HEADER``).
DEFAULT_BYPASS_HEADER = "X-E2E-Bypass-Key"


def development_jwt_secret() -> str:
    """The secret the built-in netra mock verifies with when given no ``--jwt-secret``: the
    environment's ``APEX_JWT_SECRET``, else :data:`DEVELOPMENT_JWT_SECRET`."""
    return os.environ.get("APEX_JWT_SECRET", "").strip() or DEVELOPMENT_JWT_SECRET


def new_user_id(prefix: str = "apex-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def mint_jwt(secret: str, subject: str, *, admin: bool = False, lifetime_s: int = JWT_LIFETIME_S) -> str:
    """An HS256 JWT for ``subject`` (``sub``), valid ``lifetime_s``; ``admin`` adds ``permissions: ["admin"]``."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + lifetime_s, "iss": "apex-acceptance"}
    if admin:
        claims["permissions"] = ["admin"]
    return jwt.encode(claims, secret, algorithm="HS256")


def _post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float, what: str) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        hint = " (is the bypass key right? APEX_E2E_BYPASS_KEY)" if error.code in (401, 403) and "e2e" in what else ""
        raise RuntimeError(f"Could not create a test user at {url}: HTTP {error.code}{hint}.") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise RuntimeError(f"Could not create a test user at {url}: {reason}.") from None


def token_from_auth_url(
    auth_url: str, *, bypass_key: str | None = None, bypass_header: str = DEFAULT_BYPASS_HEADER, timeout: float = 10.0
) -> str:
    """A fresh test user's token from ``auth_url``.

    With a ``bypass_key`` (the platform's end-to-end test login, ``POST …/auth/e2e/test-auth``)
    the request carries the key in ``bypass_header`` and the body the platform expects
    (``email``, ``name``, ``permissions``, ``simulate_oauth``); otherwise an empty JSON object
    is posted. The answer's ``access_token`` (or ``token``) is the user's token.
    """
    if bypass_key:
        user = new_user_id()
        body: dict[str, Any] = {
            "email": f"{user}@example.com",
            "name": user,
            "permissions": ["read", "write"],
            "simulate_oauth": True,
        }
        answer = _post_json(auth_url, body, {bypass_header: bypass_key}, timeout, "e2e test login")
    else:
        answer = _post_json(auth_url, {}, {}, timeout, "test-user endpoint")
    token = None
    if isinstance(answer, dict):
        token = answer.get("access_token") or answer.get("token")
    if not isinstance(token, str) or not token:
        raise RuntimeError(f"Test-user endpoint {auth_url} answered without an 'access_token' (or 'token') string.")
    return token
