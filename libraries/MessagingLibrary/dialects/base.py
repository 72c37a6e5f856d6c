"""The dialect seam: how the canonical operations and events of the checks look on the wire.

What a scenario *means* (send a chat message, its final outcome, its progress, a duplicate
rejected, backpressure, a state query, a push, a latency probe, a throughput message, an offline
delivery and its acknowledgement) lives in the suites, the checks and the History. How it looks
on the wire lives here. A dialect has three jobs:

1. **Connect** (:meth:`Dialect.connect_args`): where the token goes (a header, a subprotocol, a
   query parameter) and which subprotocols to offer.
2. **Open the session** (:meth:`Codec.open`): whatever the protocol asks for after the upgrade
   and before the first chat message (the netra dialect's handshake). Frames read while opening
   are handed back and recorded like any other.
3. **Translate**, per connection (:class:`Codec`): :meth:`Codec.encode` turns each canonical
   frame the library sends into the wire frame; :meth:`Codec.classify` turns each wire frame
   the server sends into the canonical frame the checks read. The raw frame is kept beside its
   classification in the History (``Event.raw``), so the log shows both.

**The canonical vocabulary is the apex protocol's** (docs/protocol.md §3-§8): a canonical frame
is a dict with ``type`` and the apex field names (``message_id``, ``sequence_id``,
``delivery_id``, ``redelivered``, ``request_id``, ...). The apex dialect is therefore the
identity. Types beyond apex's, which a dialect may produce:

| canonical type            | meaning                                                              |
|---------------------------|----------------------------------------------------------------------|
| ``agent_progress``        | a progress event of a chat message's run (``event``, ``message_id``) |
| ``keepalive``             | a heartbeat, pong or heartbeat acknowledgement: no meaning to checks |
| ``connection_established``| the server's greeting before the session opens (``user_id``)         |
| ``handshake``             | a frame of the session-opening exchange (``step``)                   |
| ``unclassified``          | a frame the dialect does not know (kept; checks ignore it)           |

A missing operation is canonical too: a state query or test-control operation the server lacks
comes back as ``{"type": "error", "code": "unsupported", "request_id": ...}``, which the
keywords turn into a skip naming the operation and the dialect; a dialect that cannot even
express an operation raises :class:`OperationUnsupported` from :meth:`Codec.encode`.

Write your own dialect by subclassing :class:`Dialect` and :class:`Codec` (template:
``docs/dialect_template.py``) and select it with ``APEX_DIALECT=package.module:ClassName``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

#: The client operations of the canonical vocabulary (the apex frame types the library sends).
OPERATIONS = frozenset(
    {
        "user_message",
        "throughput_test",
        "get_agent_state",
        "get_all_agent_states",
        "get_queue_state",
        "get_server_stats",
        "configure_agents",
        "latency_probe",
        "configure_session",
        "push",
        "ack",
    }
)
#: Canonical types that settle one chat or throughput message.
FINAL_OUTCOMES = frozenset({"ai_response", "throughput_response", "duplicate_rejected", "queue_full", "error"})


class DialectError(RuntimeError):
    """A dialect could not be loaded or configured (names the dialect and the problem)."""

    ROBOT_SUPPRESS_NAME = True


class OperationUnsupported(RuntimeError):
    """The dialect has no way to express a canonical operation on the wire."""

    ROBOT_SUPPRESS_NAME = True

    def __init__(self, operation: str, dialect: str, why: str = "") -> None:
        self.operation, self.dialect = operation, dialect
        super().__init__(
            f"The target's protocol (dialect '{dialect}') has no operation '{operation}'"
            + (f": {why}" if why else ".")
        )


@dataclass
class ConnectArgs:
    """What the WebSocket upgrade needs: the URL, extra headers, offered subprotocols."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    subprotocols: list[str] | None = None


class Codec:
    """One connection's translator (and whatever per-connection state the dialect needs).

    The apex codec is the identity: :attr:`identity` lets hot paths skip the calls.
    """

    #: ``encode`` and ``classify`` return their argument unchanged (hot paths may skip them).
    identity: ClassVar[bool] = False

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        #: How replies are matched to the messages they answer on this connection, in words
        #: (``message_id echo``, ``run_id``, ``thread_id``). The log says which one a run used.
        self.correlation = "message_id echo"

    async def open(self, ws: Any, timeout: float) -> list[Any]:
        """Run the session-opening exchange on a fresh connection; return the frames it read.

        ``ws`` is an open ``websockets`` client connection. The returned frames (parsed dicts)
        are recorded and classified as if they had just arrived. Raise
        :class:`SessionOpenError` with a clear reason when the server does not follow.
        """
        return []

    def encode(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The wire frame for canonical ``frame`` (raise :class:`OperationUnsupported`)."""
        return frame

    def classify(self, wire: dict[str, Any]) -> dict[str, Any]:
        """The canonical frame for wire frame ``wire`` (return ``wire`` itself if it already is)."""
        return wire

    def reply_to_client(self, canonical: dict[str, Any]) -> dict[str, Any] | None:
        """A frame the client must send back at once on receiving ``canonical`` (a keep-alive answer), or None."""
        return None


class SessionOpenError(RuntimeError):
    """The server did not open the session the way its dialect says it must."""

    ROBOT_SUPPRESS_NAME = True


class Dialect:
    """A wire protocol: how to connect, and a :class:`Codec` per connection.

    Subclasses set :attr:`name`, :attr:`auth_placements` (the first is the default),
    :attr:`token_kind` and override :meth:`codec` (and :meth:`connect_args` for a placement
    other than the ``Authorization`` header).
    """

    name: ClassVar[str] = "custom"
    #: Where the token may go: ``header`` (``Authorization: Bearer``), ``subprotocol``, ``query``.
    auth_placements: ClassVar[Sequence[str]] = ("header",)
    #: What a derived test user's token is: ``opaque`` (``<APEX_TOKEN>.<random>``, the apex
    #: mock's scheme) or ``jwt`` (an HS256 JWT signed with ``APEX_JWT_SECRET``, subject = user).
    token_kind: ClassVar[str] = "opaque"
    #: One sentence for the log and the libdoc: what this dialect speaks.
    description: ClassVar[str] = ""
    #: Which dialect of the built-in mock (``apex-mock --dialect``) a client of this dialect
    #: can talk to, so the suites can start their own mock for it; None: none can.
    mock_dialect: ClassVar[str | None] = None

    def __init__(self, auth_in: str | None = None) -> None:
        placement = (auth_in or "").strip().lower() or self.auth_placements[0]
        if placement not in self.auth_placements:
            raise DialectError(
                f"Dialect '{self.name}' cannot put the token in '{auth_in}' (APEX_AUTH_IN); "
                f"it supports: {', '.join(self.auth_placements)}."
            )
        self.auth_in = placement

    def connect_args(self, url: str, token: str | None) -> ConnectArgs:
        """The upgrade's URL, headers and subprotocols for ``token`` (None: send no credentials)."""
        if token is None:
            return ConnectArgs(url)
        if self.auth_in == "header":
            return ConnectArgs(url, {"Authorization": f"Bearer {token}"})
        if self.auth_in == "query":
            return ConnectArgs(with_query(url, token=token))
        if self.auth_in == "subprotocol":
            return ConnectArgs(url, subprotocols=[f"jwt.{token}"])
        raise DialectError(f"Dialect '{self.name}' has no auth placement '{self.auth_in}'.")  # pragma: no cover

    def codec(self, user_key: str | None = None) -> Codec:
        """A fresh per-connection codec; ``user_key`` names the user (same key: same user)."""
        return Codec(self)

    def describe(self) -> str:
        """For the log: ``dialect 'netra' (auth in subprotocol)``."""
        return f"dialect '{self.name}' (token in {self.auth_in})"


#: Keep-alive answers in flight (``send_soon``): asyncio keeps only weak references to tasks.
_ANSWERS: set[Any] = set()


def send_soon(coroutine: Any) -> None:
    """Run ``coroutine`` (sending a dialect's keep-alive answer) as a task kept until it is done."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _ANSWERS.add(task)
    task.add_done_callback(_ANSWERS.discard)


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def shown_url(url: str) -> str:
    """``url`` without user info, query or fragment (where a token could hide): safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


#: Fields of a wire frame that may carry a credential: replaced before the History keeps it.
SECRET_FIELDS = frozenset({"session_token", "access_token", "token", "jwt", "auth_token", "refresh_token"})


def redacted(frame: dict[str, Any]) -> dict[str, Any]:
    """``frame`` with any credential field (top level or one level down) replaced by ``"<redacted>"``."""
    out: dict[str, Any] | None = None
    for key, value in frame.items():
        if key in SECRET_FIELDS and isinstance(value, str):
            out = out or dict(frame)
            out[key] = "<redacted>"
        elif isinstance(value, dict) and SECRET_FIELDS.intersection(value):
            out = out or dict(frame)
            out[key] = redacted(value)
    return frame if out is None else out


def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """A received frame as a dict; text that is not a JSON object becomes ``<unparseable>`` / ``<not an object>``."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        return {"type": "<unparseable>", "raw": text[:500]}
    if not isinstance(frame, dict):
        return {"type": "<not an object>", "raw": frame}
    return frame
