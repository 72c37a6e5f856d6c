"""Target a running Apex server (staging, or an ``apex-mock`` started by hand).

Everything comes from environment variables; nothing secret is kept in files or logged:

| variable           | needed                          | meaning                                          |
|--------------------|---------------------------------|--------------------------------------------------|
| APEX_WS_URL        | always                          | WebSocket URL, e.g. ``wss://staging.example/ws`` |
| APEX_TOKEN         | unless APEX_AUTH_URL is set     | test token; each test derives its own user       |
| APEX_ADMIN_TOKEN   | suite 2 (admin ``push``)        | admin token                                      |
| APEX_AUTH_URL      | optional                        | test-user endpoint: each test POSTs for a token  |
| APEX_USER_STRATEGY | optional                        | ``derive`` (default), ``auth_url`` or ``fixed``  |
| APEX_DIALECT       | optional                        | ``apex`` (default), ``netra``, or ``module:Class`` |
| APEX_AUTH_IN       | optional                        | ``header``, ``subprotocol`` or ``query``         |
| APEX_JWT_SECRET    | netra with ``derive``           | signs each test user's HS256 JWT                 |
| APEX_E2E_BYPASS_KEY| optional (netra ``auth_url``)   | the end-to-end test login's bypass key           |
| APEX_E2E_BYPASS_HEADER | optional                    | its header (default ``X-E2E-Bypass-Key``)        |
| APEX_LOAD_WORKERS  | optional                        | load runs split over N processes (or ``auto``)   |
| APEX_LOAD_CLUSTER  | optional                        | load slices on a Dask cluster (``tcp://host:8786``) |

For the real platform: ``APEX_DIALECT=netra`` and either ``APEX_JWT_SECRET`` (each test user a
minted JWT) or ``APEX_AUTH_URL=https://…/auth/e2e/test-auth`` with ``APEX_E2E_BYPASS_KEY``
(each test user from the platform's end-to-end test login); ``APEX_TOKEN`` is then not needed.

``robot -V resources/variables/staging.py suites/``. When something needed is missing (here, or
``APEX_ADMIN_TOKEN`` for suite 2), or the server does not answer, each suite setup fails within
seconds with one line naming it and the URL (``Check Target``), so no test runs.
"""

import os

from robot.api.types import Secret


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


APEX_TARGET = "staging"
APEX_WS_URL = _env("APEX_WS_URL")
APEX_AUTH_URL = _env("APEX_AUTH_URL")
APEX_USER_STRATEGY = _env("APEX_USER_STRATEGY") or ("auth_url" if APEX_AUTH_URL else "derive")
APEX_TOKEN = Secret(_env("APEX_TOKEN")) if _env("APEX_TOKEN") else None
APEX_ADMIN_TOKEN = Secret(_env("APEX_ADMIN_TOKEN")) if _env("APEX_ADMIN_TOKEN") else None
APEX_DIALECT = _env("APEX_DIALECT") or "apex"
APEX_AUTH_IN = _env("APEX_AUTH_IN")
APEX_JWT_SECRET = Secret(_env("APEX_JWT_SECRET")) if _env("APEX_JWT_SECRET") else None
APEX_E2E_BYPASS_KEY = Secret(_env("APEX_E2E_BYPASS_KEY")) if _env("APEX_E2E_BYPASS_KEY") else None
APEX_E2E_BYPASS_HEADER = _env("APEX_E2E_BYPASS_HEADER") or "X-E2E-Bypass-Key"
APEX_MOCK_FAULTS = ""
#: Route every connection through the library's fault proxy (``-v APEX_PROXY:on``), optionally
#: with standing proxy faults (``-v APEX_PROXY_FAULTS:drop_responses``; see Start Fault Proxy).
APEX_PROXY = ""
APEX_PROXY_FAULTS = ""
#: The proxy refuses a target that is not on this machine unless this is true (``-v APEX_PROXY_ALLOW_REMOTE:True``).
APEX_PROXY_ALLOW_REMOTE = False

_missing = []
if not APEX_WS_URL:
    _missing.append("APEX_WS_URL (the server's WebSocket URL, e.g. ws://127.0.0.1:8765/ws)")


def _token_kind(spec: str) -> str:
    """What the dialect's test-user tokens are (``jwt`` or ``opaque``); a dialect that does not load
    here is named by the suite setup (Configure Target), so guess from the name meanwhile."""
    try:
        from MessagingLibrary.dialects import dialect_class

        return dialect_class(spec).token_kind
    except Exception:  # noqa: BLE001 - reported, naming the dialect, when the suites start
        return "jwt" if spec.lower() == "netra" else "opaque"


_mints = _token_kind(APEX_DIALECT) == "jwt" and APEX_USER_STRATEGY == "derive"
if _mints and APEX_JWT_SECRET is None:
    _missing.append(f"APEX_JWT_SECRET (dialect '{APEX_DIALECT}' derives each test user as a JWT signed with it)")
if APEX_USER_STRATEGY != "auth_url" and APEX_TOKEN is None and not _mints:
    _missing.append("APEX_TOKEN (a test user's token)")
if APEX_USER_STRATEGY == "auth_url" and not APEX_AUTH_URL:
    _missing.append("APEX_AUTH_URL (needed by APEX_USER_STRATEGY=auth_url)")
if APEX_USER_STRATEGY not in ("derive", "auth_url", "fixed"):
    _missing.append(f"a valid APEX_USER_STRATEGY (got '{APEX_USER_STRATEGY}'; use derive, auth_url or fixed)")

APEX_CONFIG_ERROR = (
    "Staging target is not configured; set the environment variable(s): " + "; ".join(_missing) if _missing else ""
)
