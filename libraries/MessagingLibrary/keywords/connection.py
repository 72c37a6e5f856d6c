"""Keywords for the target, test users and connections: connect, disconnect, drop, reconnect."""

from __future__ import annotations

import asyncio
import enum
import json
import urllib.error
import urllib.request
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from assertionengine import AssertionOperator
from robot.api import SkipExecution, logger
from robot.api.deco import keyword
from robot.api.types import Secret

from ..context import LibraryComponent, Owned, UserStrategy, seconds
from ..dialects import load_dialect
from ..dialects.base import shown_url
from ..engine import auth
from ..engine.history import History
from ..engine.session import ServerError, Session, SessionError

TOKEN_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")


def _reveal(value: Secret | str | None) -> str | None:
    if value is None:
        return None
    return value.value if isinstance(value, Secret) else str(value)


_shown_url = shown_url


class HealthFigure(enum.Enum):
    """A figure of the connection monitor (see `Get Connection Health`)."""

    pings = "pings"
    pongs = "pongs"
    missed_pings = "missed_pings"
    mean_round_trip = "mean_round_trip"
    max_round_trip = "max_round_trip"


class TargetNeed(enum.Enum):
    """What a suite needs of its target beyond a test user's connection (see `Check Target`)."""

    admin = "admin"


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
        dialect: str = "apex",
        auth_in: str | None = None,
        jwt_secret: Secret | str | None = None,
        bypass_key: Secret | str | None = None,
        bypass_header: str = auth.DEFAULT_BYPASS_HEADER,
    ) -> None:
        """Sets the server the suites talk to, the protocol it speaks and how each test gets its own user.

        ``url`` is the WebSocket URL (``ws://host:port/ws``). ``token`` and ``admin_token`` are
        best given as Secret variables (see ``resources/variables/staging.py``); they never
        appear in the log. ``user_strategy`` picks how `Connect` creates a fresh user:

        | =Strategy= | =Each test's user=                                                     |
        | derive     | a unique token ``<token>.<12 hex chars>``: a new identity per test      |
        | auth_url   | a token returned by POST to ``auth_url`` (JSON ``{"token": ...}``)      |
        | fixed      | ``token`` as is: counts become relative; pristine-user tests are skipped |

        ``dialect`` is the wire protocol (see `Dialects` in the introduction): ``apex``,
        ``netra`` or ``package.module:ClassName`` for your own; ``auth_in`` where the token
        goes (``header``, ``subprotocol`` or ``query``, as the dialect allows; default its
        first). A dialect whose tokens are JWTs (netra) derives each test user by minting an
        HS256 JWT (subject ``apex-test-<12 hex>``, valid an hour) signed with ``jwt_secret``
        (``APEX_JWT_SECRET``); its admin is a JWT with ``permissions: ["admin"]`` unless
        ``admin_token`` is given. With ``auth_url`` and a ``bypass_key``
        (``APEX_E2E_BYPASS_KEY``) each test user comes from the platform's end-to-end test login
        (``POST …/auth/e2e/test-auth``, key in the ``bypass_header`` header).

        With ``fixed``, message ids the library generates (``seq-msg-{i}``, ``burst-…``,
        ``conv-{i}``) get a per-test suffix ``~<8 hex>`` so a rerun is not rejected as
        duplicates of the previous run within the server's duplicate window.

        | Configure Target    ${url}    ${APEX_TOKEN}    admin_token=${APEX_ADMIN_TOKEN}
        """
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"Target URL must start with ws:// or wss://, got '{shown_url(url)}'.")
        protocol = load_dialect(dialect, auth_in)  # DialectError names the dialect and the problem
        token_value, admin_value = _reveal(token), _reveal(admin_token)
        secret = _reveal(jwt_secret)
        if user_strategy is UserStrategy.auth_url and not auth_url:
            raise ValueError("user_strategy=auth_url needs auth_url (the platform's test-user endpoint).")
        minted = protocol.token_kind == "jwt" and user_strategy is UserStrategy.derive
        if minted and not secret:
            raise ValueError(
                f"Dialect '{protocol.name}' derives test users as JWTs: set APEX_JWT_SECRET (the secret the server verifies them with)."
            )
        if minted and admin_value and admin_value.count(".") != 2:
            logger.info(
                f"The admin token is not a JWT, which dialect '{protocol.name}' needs: an admin JWT is minted instead."
            )
            admin_value = None
        if user_strategy is not UserStrategy.auth_url and not minted and not token_value:
            raise ValueError(f"user_strategy={user_strategy.value} needs a token (set APEX_TOKEN).")
        target = self.ctx.target
        target.url, target.token, target.admin_token = url, token_value, admin_value
        target.strategy, target.auth_url, target.name = user_strategy, auth_url, name
        target.dialect, target.jwt_secret = protocol, secret
        self.ctx.trust.pre_existing_users = user_strategy is UserStrategy.fixed
        self.ctx.trust.same_clock = (urlsplit(url).hostname or "") in ("127.0.0.1", "::1", "localhost")
        target.bypass_key, target.bypass_header = _reveal(bypass_key), bypass_header
        login = " via the end-to-end test login" if target.bypass_key and user_strategy is UserStrategy.auth_url else ""
        logger.info(
            f"Target '{name}': {shown_url(url)}, {protocol.describe()}, test users by strategy "
            f"'{user_strategy.value}'{' (minted JWTs)' if minted else ''}{login}."
        )

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

    @keyword(tags=("connection", "target"))
    def check_target(self, *needs: TargetNeed, timeout: timedelta = timedelta(seconds=5)) -> None:
        """Checks once, within ``timeout`` in all, that the configured target can run the suite.

        Meant for a suite setup, so a bad target fails the suite in seconds with one line
        naming the problem and the target's URL, instead of every test waiting out its own
        timeouts. In order, and stopping at the first problem:

        - the settings the suite needs are there (for ``admin``: an admin token, APEX_ADMIN_TOKEN);
        - the target is reachable (a TCP connection);
        - it completes the WebSocket handshake and accepts a test user's token;
        - for ``admin``: it accepts the admin token, and a push (to the checking user, who is
          online) is not refused as ``forbidden``.

        A server that answers ``unsupported`` to an operation passes: the scenarios that need
        it are skipped, saying so. Tokens never appear in the message; the connections used
        for the check are closed before it returns.

        | Check Target
        | Check Target    admin    timeout=3 s
        """
        target = self.ctx.target
        if target.url is None:
            raise RuntimeError("No target configured: call 'Configure Target' (or 'Set Up Apex Target') first.")
        shown = _shown_url(target.url)
        prefix = f"Target '{target.name}' at {shown} cannot run this suite: "
        wanted = set(needs)
        if TargetNeed.admin in wanted and not self._admin_token():
            raise AssertionError(prefix + "no admin token is set (APEX_ADMIN_TOKEN); the suite pushes from an admin connection.")
        limit = seconds(timeout) or 5.0
        deadline = time.monotonic() + limit
        left = lambda: max(0.05, deadline - time.monotonic())  # noqa: E731
        try:
            token = self._new_user_token()
        except RuntimeError as error:
            raise AssertionError(prefix + str(error)) from None
        problem = self.ctx.run(self._probe(target.url, token, wanted, left, limit), limit, f"Checking the target {shown}")
        if problem:
            raise AssertionError(prefix + problem)
        logger.info(f"Target '{target.name}' at {shown} is reachable and accepts test users"
                    + (" and the admin token." if TargetNeed.admin in wanted else "."))

    async def _probe(self, url: str, token: str, needs: set[TargetNeed], left, limit: float) -> str:
        """The first problem of the target, in words, or ``""``."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), left())
        except (TimeoutError, asyncio.TimeoutError):
            return f"no TCP connection to {parts.hostname}:{port} within {limit:g} s."
        except OSError as error:
            if isinstance(error, ConnectionRefusedError):
                return f"nothing accepts connections on {parts.hostname}:{port} (connection refused)."
            return f"{parts.hostname}:{port} is not reachable ({error.strerror or error})."
        writer.close()
        sessions: list[Session] = []
        try:
            user = await self._open_probe(url, token, "test user", left, limit, sessions, self.ctx.target.dialect)
            if isinstance(user, str):
                return user
            if TargetNeed.admin not in needs:
                return ""
            admin = await self._open_probe(url, str(self._admin_token()), "admin", left, limit, sessions, self.ctx.target.dialect)
            if isinstance(admin, str):
                return admin
            return await self._probe_push(user, admin, left)
        finally:
            for session in sessions:
                try:
                    await asyncio.wait_for(session.close(1.0), 2.0)
                except Exception:  # noqa: BLE001 (closing a probe must not hide the verdict)
                    pass

    @staticmethod
    async def _open_probe(url: str, token: str, who: str, left, limit: float, sessions: list, dialect) -> Session | str:
        session = Session(f"target-check-{who.replace(' ', '-')}", url, History(), token=token, dialect=dialect)
        try:
            await asyncio.wait_for(session.open(left()), left() + 0.5)
        except (SessionError, TimeoutError, asyncio.TimeoutError) as error:
            if isinstance(error, SessionError) and "timed out" not in str(error):
                shown = shown_url(url)
                detail = str(error).replace(f"Server at {shown} ", "it ").replace(f" with {shown}", "").replace(f" to {shown}", "")
                return f"the {who}'s connection failed: {detail}"
            return (
                f"it accepted the TCP connection but completed no WebSocket handshake for the {who} "
                f"within {limit:g} s."
            )
        sessions.append(session)
        return session

    @staticmethod
    async def _probe_push(user: Session, admin: Session, left) -> str:
        """Pushes one low-priority message to the (online) checking user; only ``forbidden`` fails."""
        try:
            await user.wait_until(lambda: user.session_started is not None, min(1.0, left()), lambda: "")
        except (AssertionError, TimeoutError, asyncio.TimeoutError):
            return ""  # no session_started: no user id to push to; the admin handshake passed
        if user.user_id is None:
            return ""
        frame = {
            "type": "push",
            "to_user": user.user_id,
            "message_id": f"target-check-{uuid.uuid4().hex[:12]}",
            "content": "target check",
            "priority": "low",
        }
        try:
            await admin.request(frame, left())
        except ServerError as error:
            if error.code == "forbidden":
                return "the admin token (APEX_ADMIN_TOKEN) is not an admin on this server (push answered 'forbidden')."
            if error.code == "unsupported":
                return ""  # scenarios that push are skipped, saying so
            return f"a push from the admin connection was refused: {error}."
        except (AssertionError, TimeoutError, asyncio.TimeoutError):
            return "the admin connection's push got no push_result in time."
        return ""

    def _new_user_token(self) -> str:
        target = self.ctx.target
        if target.url is None:
            raise RuntimeError("No target configured: call 'Configure Target' (or 'Set Up Apex Target') first.")
        if target.strategy is UserStrategy.fixed:
            return str(target.token)
        if target.strategy is UserStrategy.derive:
            if target.dialect.token_kind == "jwt":
                return auth.mint_jwt(str(target.jwt_secret), auth.new_user_id())
            return f"{target.token}.{uuid.uuid4().hex[:12]}"
        return auth.token_from_auth_url(
            str(target.auth_url), bypass_key=target.bypass_key, bypass_header=target.bypass_header
        )

    # -- connections -------------------------------------------------------------------------

    @keyword(tags=("connection",))
    def connect(
        self,
        connection: str = "main",
        *,
        same_user_as: str | None = None,
        admin: bool = False,
        token: Secret | None = None,
        authenticate: bool = True,
        headers: dict[str, str] | None = None,
        url: str | None = None,
        timeout: timedelta = timedelta(seconds=10),
    ) -> str:
        """Opens a WebSocket connection named ``connection`` and makes it the current connection.

        By default the connection acts as a new test user (see `Configure Target`).
        ``same_user_as`` reuses the user of another connection (a second device of one user);
        ``admin`` connects with the admin token; ``token`` (a Secret) overrides the token;
        ``authenticate=False`` sends no ``Authorization`` header at all. ``headers`` are added
        to the handshake. ``url`` overrides the target's URL.

        Fails with a specific message on connection refused, an HTTP status instead of the
        upgrade (401 for a missing or bad token) or no handshake within ``timeout``. Returns
        the connection's name. The connection is closed at the end of the test (or suite) that opened it.

        | Connect    alice
        | Connect    alice-phone    same_user_as=alice
        | Run Keyword And Expect Error    *HTTP 401*    Connect    nobody    authenticate=False
        """
        if connection in self.ctx.sessions and self.ctx.sessions[connection].is_open:
            raise RuntimeError(f"A connection named '{connection}' is already open; disconnect it first.")
        target_url = url or self.ctx.target.url
        if not target_url:
            raise RuntimeError("No target configured: call 'Configure Target' (or 'Set Up Apex Target') first.")
        token_value = self._token_for(same_user_as=same_user_as, admin=admin, token=token)
        if token_value is not None and not set(token_value) <= TOKEN_CHARS:
            logger.info("The token has characters outside [A-Za-z0-9._~-]; the server should refuse it.")
        handshake = dict(headers or {})
        limit = seconds(timeout) or 10.0
        dialect = self.ctx.target.dialect

        async def _open() -> Session:
            session = Session(
                connection,
                target_url,
                self.ctx.history,
                headers=handshake,
                token=token_value,
                dialect=dialect,
                authenticate=authenticate,
            )
            session.observer = self.ctx.trust.observe
            await session.open(limit)
            return session

        try:
            session = self.ctx.run(_open(), limit, f"Connecting '{connection}' to {shown_url(target_url)}")
        except SessionError as error:
            raise AssertionError(str(error)) from None
        self.ctx.sessions[connection] = session
        self.ctx.current = connection
        self.ctx.owners.append(Owned(self.ctx.scope, session))
        logger.info(f"Connected '{connection}' to {shown_url(target_url)} ({dialect.describe()}).")
        return connection

    def _token_for(self, *, same_user_as: str | None, admin: bool, token: Secret | None) -> str | None:
        if token is not None:
            return _reveal(token)
        if same_user_as is not None:
            return self.ctx.session(same_user_as).token
        if admin:
            admin_token = self._admin_token()
            if not admin_token:
                raise RuntimeError("This needs an admin connection, but no admin token is set (APEX_ADMIN_TOKEN).")
            return admin_token
        return self._new_user_token()

    def _admin_token(self) -> str | None:
        """The admin's token: APEX_ADMIN_TOKEN, else (a JWT dialect deriving users) a freshly minted admin JWT."""
        target = self.ctx.target
        if target.admin_token:
            return target.admin_token
        if target.dialect.token_kind == "jwt" and target.jwt_secret and target.strategy is UserStrategy.derive:
            return auth.mint_jwt(target.jwt_secret, auth.new_user_id("apex-admin"), admin=True)
        return None

    @keyword(tags=("connection",))
    def disconnect(self, connection: str | None = None, timeout: timedelta = timedelta(seconds=5)) -> None:
        """Closes a connection cleanly (close frame and handshake). Default: the current one.

        Closing a connection that is already closed does nothing.

        | Disconnect
        | Disconnect    alice
        """
        session = self.ctx.session(connection)
        limit = seconds(timeout) or 5.0
        self.ctx.run(session.close(limit), limit, f"Closing '{session.alias}'")
        logger.info(
            f"Disconnected '{session.alias}' ({session.dialect.describe()}; replies matched to messages by "
            f"{session.codec.correlation})."
        )

    @keyword(tags=("connection",))
    def drop_connection(self, connection: str | None = None) -> None:
        """Drops a connection abruptly: the TCP connection is aborted with no close frame.

        The server sees the connection vanish, as on a network failure. Use `Reconnect` to
        come back as the same user.

        | Drop Connection
        """
        session = self.ctx.session(connection)
        self.ctx.run(session.drop(), 5.0, f"Dropping '{session.alias}'")
        logger.info(f"Dropped '{session.alias}' (no close frame).")

    @keyword(tags=("connection",))
    def reconnect(self, connection: str | None = None, timeout: timedelta = timedelta(seconds=10)) -> float:
        """Reconnects ``connection`` as the same user and returns the reconnect time in seconds.

        An open connection is closed cleanly first. The time is measured from the start of
        the new connection attempt to the completed WebSocket handshake.

        | ${seconds} =    Reconnect    alice
        """
        session = self.ctx.session(connection)
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
    def switch_connection(self, connection: str) -> str:
        """Makes ``connection`` the current connection and returns the name of the previous one.

        | ${previous} =    Switch Connection    bob
        """
        self.ctx.session(connection)
        previous, self.ctx.current = self.ctx.current, connection
        return previous or ""

    @keyword(tags=("connection",))
    def connection_should_be_open(self, connection: str | None = None) -> None:
        """Fails if the connection has closed, naming the close code and reason.

        | Connection Should Be Open    alice
        """
        session = self.ctx.session(connection)
        if not session.is_open:
            raise AssertionError(session.closed_description("checking that it is open"))

    @keyword(tags=("connection",))
    def get_session_info(self, connection: str | None = None, timeout: timedelta = timedelta(seconds=5)) -> dict[str, Any]:
        """Waits for the server's ``session_started`` frame and returns it (user id, resumed, queued).

        Fails after ``timeout`` when the server sends none (it is optional in the protocol).

        | ${info} =    Get Session Info
        | Should Be Equal    ${info}[resumed]    ${False}
        """
        session = self.ctx.session(connection)
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
        connection: str | None = None,
        interval: timedelta = timedelta(seconds=1),
        timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        """Starts pinging the connection every ``interval`` and recording round-trip times.

        A ping not answered within ``timeout`` counts as missed. Read the figures with
        `Get Connection Health`. The monitor stops when the connection closes.

        | Start Connection Monitor    interval=500ms
        """
        session = self.ctx.session(connection)
        self.ctx.loop.call(session.start_monitor, seconds(interval) or 1.0, seconds(timeout) or 5.0)

    @keyword(tags=("connection", "health", "measure"))
    def get_connection_health(
        self,
        figure: HealthFigure,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        connection: str | None = None,
    ) -> Any:
        """Returns a figure of the connection monitor (`Start Connection Monitor`), optionally asserting it.

        ``figure`` is ``pings`` (sent), ``pongs`` (answered), ``missed pings`` (not answered
        within the monitor's timeout), ``mean round trip`` or ``max round trip`` (seconds;
        thresholds accept Robot times). Closes the library did not ask for are counted by
        `Get Disconnection Count`.

        | Get Connection Health    missed pings    ==    0
        | Get Connection Health    max round trip    <    100 ms    connection=alice
        | ${pings} =    Get Connection Health    pings
        """
        session = self.ctx.session(connection)
        health = session.health
        values = {
            HealthFigure.pings: health.pings,
            HealthFigure.pongs: health.pongs,
            HealthFigure.missed_pings: health.missed,
            HealthFigure.mean_round_trip: round(health.mean_rtt_s, 6),
            HealthFigure.max_round_trip: round(health.max_rtt_s, 6),
        }
        unit = "s" if figure in (HealthFigure.mean_round_trip, HealthFigure.max_round_trip) else "count"
        return self.ctx.check(
            f"health {figure.value.replace('_', ' ')}",
            values[figure],
            operator,
            expected,
            unit=unit,
            message=f"{health.missed} of {health.pings} pings unanswered on '{session.alias}'",
        )

    @keyword(tags=("connection", "health", "measure"))
    def get_disconnection_count(
        self, operator: AssertionOperator | None = None, expected: Any = None, *, connection: str | None = None
    ) -> int:
        """Returns how many connections closed without this library asking, optionally asserting it.

        Counts every connection when ``connection`` is not given. A connection that is closed
        right now without having been closed by the library also counts.

        | Get Disconnection Count    ==    0
        """
        sessions = [self.ctx.session(connection)] if connection else list(self.ctx.sessions.values())
        count = sum(s.unexpected_closes for s in sessions)
        return self.ctx.check("disconnections", count, operator, expected, unit="count")
