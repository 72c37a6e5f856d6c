"""Default target: the built-in mock server, started by each suite's setup on a free port.

Select explicitly with ``robot -V resources/variables/mock.py suites/`` (it is also the
default: ``resources/apex.resource`` imports this file). Fault modes for a run:
``-v APEX_MOCK_FAULTS:reorder`` (comma-separated for several).
"""

import os

from MessagingLibrary.engine.auth import development_jwt_secret
from robot.api.types import Secret

APEX_TARGET = "mock"
#: Filled in by the suite setup from the started mock server.
APEX_WS_URL = ""
#: The mock accepts any token; each test derives its own user from this one.
APEX_TOKEN = Secret("qa")
APEX_ADMIN_TOKEN = Secret("admin-qa")
APEX_USER_STRATEGY = "derive"
APEX_AUTH_URL = ""
#: The wire protocol: ``apex`` (default), ``netra`` (the real platform's; the suites then start
#: the mock in that dialect) or ``package.module:ClassName`` (``-v APEX_DIALECT:netra``, or the
#: environment variable of the same name).
APEX_DIALECT = os.environ.get("APEX_DIALECT", "").strip() or "apex"
#: Where the token goes, where the dialect allows several: ``header``, ``subprotocol``, ``query``
#: (empty: the dialect's first choice).
APEX_AUTH_IN = os.environ.get("APEX_AUTH_IN", "").strip()
#: Signs each test user's JWT in a JWT dialect (netra). The mock verifies with the same secret:
#: the environment's APEX_JWT_SECRET, else the public development secret.
APEX_JWT_SECRET = Secret(development_jwt_secret())
APEX_E2E_BYPASS_KEY = None
APEX_E2E_BYPASS_HEADER = "X-E2E-Bypass-Key"
APEX_MOCK_FAULTS = ""
#: Route every connection through the library's fault proxy (``-v APEX_PROXY:on``), optionally
#: with standing proxy faults (``-v APEX_PROXY_FAULTS:drop_responses``; see Start Fault Proxy).
APEX_PROXY = ""
APEX_PROXY_FAULTS = ""
#: The proxy refuses a target that is not on this machine unless this is true (``-v APEX_PROXY_ALLOW_REMOTE:True``).
APEX_PROXY_ALLOW_REMOTE = False
#: Set by a variable file that cannot configure its target; the suite setup fails with it, so no test runs.
APEX_CONFIG_ERROR = ""
