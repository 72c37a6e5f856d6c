"""Keywords for the target, test users and connections: connect, disconnect, drop, reconnect."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from typing import Any

from assertionengine import AssertionOperator
from robot.api import SkipExecution, logger
from robot.api.deco import keyword
from robot.api.types import Secret

from ..context import LibraryComponent, Owned, UserStrategy, seconds
from ..engine.session import Session, SessionError

TOKEN_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")


def _reveal(value: Secret | str | None) -> str | None:
    if value is None:
        return None
    return value.value if isinstance(value, Secret) else str(value)


class ConnectionKeywords(LibraryComponent):
    """Target configuration, test users and the lifecycle of connections."""

    # -- target and users --------------------------------------------------------------------

    @keyword(tags=("connection", "target"))
    def configure_target(
        self,
        url: str,
        token: Secret | str | None = None,
        *,
        admin_token: Secret | str | None = None,
        user_strategy: UserStrategy = UserStrategy.derive,
        auth_url: str | None = None,
        name: str = "target",
    ) -> None:
        """Sets the server the suites talk to and how each test gets its own user.

        ``url`` is the WebSocket URL (``ws://host:port/ws``). ``token`` and ``admin_token`` are
        best given as Secret variables (see ``resources/variables/staging.py``); they never
        appear in the log. ``user_strategy`` picks how `Connect` creates a fresh user:

        | =Strategy= | =Each test's user=                                                     |
        | derive     | a unique token ``<token>.<12 hex chars>``: a new identity per test      |
        | auth_url   | a token returned by POST to ``auth_url`` (JSON ``{"token": ...}``)      |
        | fixed      | ``token`` as is: counts become relative; pristine-user tests are skipped |

        With ``fixed``, message ids the library generates (``seq-msg-{i}``, ``burst-…``,
        ``conv-{i}``) get a per-test suffix ``~<8 hex>`` so a rerun is not rejected as
        duplicates of the previous run within the server's duplicate window.

        | Configure Target    ${url}    ${APEX_TOKEN}    admin_token=${APEX_ADMIN_TOKEN}
        """
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"Target URL must start with ws:// or wss://, got '{url}'.")
        token_value, admin_value = _reveal(token), _reveal(admin_token)
        if user_strategy is UserStrategy.auth_url and not auth_url:
            raise ValueError("user_strategy=auth_url needs auth_url (the platform's test-user endpoint).")
        if user_strategy is not UserStrategy.auth_url and not token_value:
            raise ValueError(f"user_strategy={user_strategy.value} needs a token (set APEX_TOKEN).")
        target = self.ctx.target
        target.url, target.token, target.admin_token = url, token_value, admin_value
        target.strategy, target.auth_url, target.name = user_strategy, auth_url, name
        logger.info(f"Target '{name}': {url}, test users by strategy '{user_strategy.value}'.")

    @keyword(tags=("connection", "target"))
    def require_pristine_test_user(self) -> None:
        """Skips the current test when test users are not fresh (strategy ``fixed``).

        Use it first in a test whose checks need a user with no earlier state.

        | Require Pristine Test User
        """
        if self.ctx.target.strategy is UserStrategy.fixed:
            raise SkipExecution(
                "Needs a fresh test user, but the target uses user_strategy=fixed (APEX_TOKEN as is)."
            )

    def _new_user_token(self) -> str:
        target = self.ctx.target
        if target.url is None:
            raise RuntimeError("No target configured: call 'Configure Target' (or 'Set Up Apex Target') first.")
        if target.strategy is UserStrategy.fixed:
            return str(target.token)
        if target.strategy is UserStrategy.derive:
            return f"{target.token}.{uuid.uuid4().hex[:12]}"
        return self._token_from_auth_url(str(target.auth_url))

    @staticmethod
    def _token_from_auth_url(auth_url: str, timeout: float = 10.0) -> str:
        request = urllib.request.Request(auth_url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
                body = json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise RuntimeError(f"Could not create a test user at {auth_url}: {error}") from None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RuntimeError(f"Test-user endpoint {auth_url} answered without a 'token' string.")
        return token

    # -- connections -------------------------------------------------------------------------

    @keyword(tags=("connection",))
    def connect(
        self,
        alias: str = "main",
        *,
        same_user_as: str | None = None,
        admin: bool = False,
        token: Secret | None = None,
        authenticate: bool = True,
        headers: dict[str, str] | None = None,
        url: str | None = None,
        timeout: timedelta = timedelta(seconds=10),
    ) -> str:
        """Opens a WebSocket connection under ``alias`` and makes it the current connection.

        By default the connection acts as a new test user (see `Configure Target`).
        ``same_user_as`` reuses the user of another alias (a second device of one user);
        ``admin`` connects with the admin token; ``token`` (a Secret) overrides the token;
        ``authenticate=False`` sends no ``Authorization`` header at all. ``headers`` are added
        to the handshake. ``url`` overrides the target's URL.

        Fails with a specific message on connection refused, an HTTP status instead of the
        upgrade (401 for a missing or bad token) or no handshake within ``timeout``. Returns
        the alias. The connection is closed at the end of the test (or suite) that opened it.

        | Connect    alice
        | Connect    alice-phone    same_user_as=alice
        | Run Keyword And Expect Error    *HTTP 401*    Connect    nobody    authenticate=False
        """
        if alias in self.ctx.sessions and self.ctx.sessions[alias].is_open:
            raise RuntimeError(f"A connection with alias '{alias}' is already open; disconnect it first.")
        target_url = url or self.ctx.target.url
        if not target_url:
            raise RuntimeError("No target configured: call 'Configure Target' (or 'Set Up Apex Target') first.")
        token_value = self._token_for(same_user_as=same_user_as, admin=admin, token=token)
        if token_value is not None and not set(token_value) <= TOKEN_CHARS:
            logger.info("The token has characters outside [A-Za-z0-9._~-]; the server should refuse it.")
        handshake = dict(headers or {})
        if authenticate and token_value is not None:
            handshake["Authorization"] = f"Bearer {token_value}"
        limit = seconds(timeout) or 10.0

        async def _open() -> Session:
            session = Session(alias, target_url, self.ctx.history, headers=handshake, token=token_value)
            await session.open(limit)
            return session

        try:
            session = self.ctx.run(_open(), limit, f"Connecting '{alias}' to {target_url}")
        except SessionError as error:
            raise AssertionError(str(error)) from None
        self.ctx.sessions[alias] = session
        self.ctx.current = alias
        self.ctx.owners.append(Owned(self.ctx.scope, session))
        logger.info(f"Connected '{alias}' to {target_url}.")
        return alias

    def _token_for(self, *, same_user_as: str | None, admin: bool, token: Secret | None) -> str | None:
        if token is not None:
            return _reveal(token)
        if same_user_as is not None:
            return self.ctx.session(same_user_as).token
        if admin:
            if not self.ctx.target.admin_token:
                raise RuntimeError("This needs an admin connection, but no admin token is set (APEX_ADMIN_TOKEN).")
            return self.ctx.target.admin_token
        return self._new_user_token()

    @keyword(tags=("connection",))
    def disconnect(self, alias: str | None = None, timeout: timedelta = timedelta(seconds=5)) -> None:
        """Closes a connection cleanly (close frame and handshake). Default: the current one.

        Closing a connection that is already closed does nothing.

        | Disconnect
        | Disconnect    alice
        """
        session = self.ctx.session(alias)
        limit = seconds(timeout) or 5.0
        self.ctx.run(session.close(limit), limit, f"Closing '{session.alias}'")
        logger.info(f"Disconnected '{session.alias}'.")

    @keyword(tags=("connection",))
    def drop_connection(self, alias: str | None = None) -> None:
        """Drops a connection abruptly: the TCP connection is aborted with no close frame.

        The server sees the connection vanish, as on a network failure. Use `Reconnect` to
        come back as the same user.

        | Drop Connection
        """
        session = self.ctx.session(alias)
        self.ctx.run(session.drop(), 5.0, f"Dropping '{session.alias}'")
        logger.info(f"Dropped '{session.alias}' (no close frame).")

    @keyword(tags=("connection",))
    def reconnect(self, alias: str | None = None, timeout: timedelta = timedelta(seconds=10)) -> float:
        """Reconnects ``alias`` as the same user and returns the reconnect time in seconds.

        An open connection is closed cleanly first. The time is measured from the start of
        the new connection attempt to the completed WebSocket handshake.

        | ${seconds} =    Reconnect    alice
        """
        session = self.ctx.session(alias)
        limit = seconds(timeout) or 10.0

        async def _again() -> float:
            if session.is_open:
                await session.close(limit)
            return await session.open(limit)

        try:
            elapsed = self.ctx.run(_again(), limit, f"Reconnecting '{session.alias}'")
        except SessionError as error:
            raise AssertionError(str(error)) from None
        self.ctx.current = session.alias
        logger.info(f"Reconnected '{session.alias}' in {elapsed * 1000:.1f} ms.")
        return elapsed

    @keyword(tags=("connection",))
    def switch_connection(self, alias: str) -> str:
        """Makes ``alias`` the current connection and returns the previous alias.

        | ${previous} =    Switch Connection    bob
        """
        self.ctx.session(alias)
        previous, self.ctx.current = self.ctx.current, alias
        return previous or ""

    @keyword(tags=("connection",))
    def connection_should_be_open(self, alias: str | None = None) -> None:
        """Fails if the connection has closed, naming the close code and reason.

        | Connection Should Be Open    alice
        """
        session = self.ctx.session(alias)
        if not session.is_open:
            raise AssertionError(session.closed_description("checking that it is open"))

    @keyword(tags=("connection",))
    def get_session_info(self, alias: str | None = None, timeout: timedelta = timedelta(seconds=5)) -> dict[str, Any]:
        """Waits for the server's ``session_started`` frame and returns it (user id, resumed, queued).

        Fails after ``timeout`` when the server sends none (it is optional in the protocol).

        | ${info} =    Get Session Info
        | Should Be Equal    ${info}[resumed]    ${False}
        """
        session = self.ctx.session(alias)
        limit = seconds(timeout) or 5.0
        self.ctx.run(
            session.wait_until(lambda: session.session_started is not None, limit, lambda: "waiting for session_started"),
            limit,
            "Waiting for session_started",
        )
        return dict(session.session_started or {})

    # -- health ------------------------------------------------------------------------------

    @keyword(tags=("connection", "health"))
    def start_connection_monitor(
        self,
        alias: str | None = None,
        interval: timedelta = timedelta(seconds=1),
        timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        """Starts pinging the connection every ``interval`` and recording round-trip times.

        A ping not answered within ``timeout`` counts as missed. Read the figures with
        `Get Connection Health`. The monitor stops when the connection closes.

        | Start Connection Monitor    interval=500ms
        """
        session = self.ctx.session(alias)
        self.ctx.loop.call(session.start_monitor, seconds(interval) or 1.0, seconds(timeout) or 5.0)

    @keyword(tags=("connection", "health"))
    def get_connection_health(self, alias: str | None = None) -> dict[str, Any]:
        """Returns the monitor's figures: pings, pongs, missed, mean and max round-trip (s), disconnections.

        ``disconnections`` counts closes this library did not ask for (server close, network).

        | ${health} =    Get Connection Health
        | Should Be Equal As Integers    ${health}[missed]    0
        """
        session = self.ctx.session(alias)
        health = session.health
        return {
            "open": session.is_open,
            "pings": health.pings,
            "pongs": health.pongs,
            "missed": health.missed,
            "mean_rtt_s": round(health.mean_rtt_s, 6),
            "max_rtt_s": round(health.max_rtt_s, 6),
            "disconnections": session.unexpected_closes,
        }

    @keyword(tags=("connection", "health", "measure"))
    def get_disconnection_count(
        self, operator: AssertionOperator | None = None, expected: Any = None, *, alias: str | None = None
    ) -> int:
        """Returns how many connections closed without this library asking, optionally asserting it.

        Counts every connection when ``alias`` is not given. A connection that is closed
        right now without having been closed by the library also counts.

        | Get Disconnection Count    ==    0
        """
        sessions = [self.ctx.session(alias)] if alias else list(self.ctx.sessions.values())
        count = sum(s.unexpected_closes for s in sessions)
        return self.ctx.check("disconnections", count, operator, expected, unit="count")
