"""A dialect template: copy this file, rename it and its classes, change the places marked CHANGE.

As shipped it speaks the apex protocol of docs/protocol.md, field by field, so the suites run
with it against the built-in mock before you change anything:

    cp docs/dialect_template.py mycompany/apex_dialect.py    # rename TemplateDialect, name
    robot --pythonpath . -v APEX_DIALECT:mycompany.apex_dialect:MyCompanyDialect suites/

The contract (what each method must do, the canonical vocabulary) is docs/dialects.md.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from MessagingLibrary.dialects import Codec, ConnectArgs, Dialect, OperationUnsupported, SessionOpenError
from MessagingLibrary.dialects.base import parse_frame, with_query

# CHANGE: your platform's frame types. Canonical operation (what the library sends) -> wire type.
# Delete an operation your platform cannot express at all: a scenario sending it is then
# skipped, naming it (OperationUnsupported). Better, keep it if the server refuses it with an
# error you can classify as {"type": "error", "code": "unsupported"}: the same skip, and the
# server was really asked.
OUTGOING_TYPES = {
    "user_message": "user_message",  # a chat message
    "throughput_test": "throughput_test",  # a load-run message (suite 3)
    "get_agent_state": "get_agent_state",  # state queries
    "get_all_agent_states": "get_all_agent_states",
    "get_queue_state": "get_queue_state",
    "get_server_stats": "get_server_stats",
    "configure_session": "configure_session",  # test control
    "configure_agents": "configure_agents",
    "push": "push",  # test control (admin): a message for another user's offline queue
    "ack": "ack",  # acknowledges offline deliveries (delivery_ids)
    "latency_probe": "latency_probe",
}

# CHANGE: the frame types your server sends -> the canonical type the checks read.
INCOMING_TYPES = {
    "session_started": "session_started",  # the greeting (user_id, resumed, queued)
    "ai_response": "ai_response",  # the final answer to a chat message
    "duplicate_rejected": "duplicate_rejected",
    "queue_full": "queue_full",  # backpressure
    "error": "error",  # code, message
    "throughput_response": "throughput_response",
    "agent_state": "agent_state",
    "all_agent_states": "all_agent_states",
    "queue_state": "queue_state",
    "server_stats": "server_stats",
    "session_configured": "session_configured",
    "agents_configured": "agents_configured",
    "push_result": "push_result",
    "pushed_message": "pushed_message",  # an offline delivery (delivery_id, queued_at, redelivered)
    "latency_response": "latency_response",
}

# CHANGE: top-level field names that differ on your wire: canonical name -> wire name. A field
# not listed keeps its name. (Nested fields, e.g. inside a state reply, are not renamed here.)
FIELDS = {
    "message_id": "message_id",
    "sequence_id": "sequence_id",
    "request_id": "request_id",  # replies to queries are matched by their request_id echo
    "content": "content",
    "delivery_id": "delivery_id",
}
WIRE_FIELDS = {wire: canonical for canonical, wire in FIELDS.items()}


class TemplateCodec(Codec):
    """One connection's translator. Keep per-connection state (a thread id, a session) here."""

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect)
        # CHANGE if your server does not echo message_id: say how replies are matched instead.
        self.correlation = "message_id echo"

    async def open(self, ws: Any, timeout: float) -> list[Any]:
        # CHANGE: your platform's session opening (a handshake, a login frame, a subscription).
        # The apex server greets every connection with session_started and needs nothing back;
        # waiting for it makes a server that speaks something else fail here, saying why.
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise SessionOpenError(f"no session_started within {timeout:g} s") from None
        frame = parse_frame(raw)
        if frame.get("type") != "session_started":
            raise SessionOpenError(f"the first frame was {str(frame.get('type'))[:60]!r}, not session_started")
        return [frame]  # recorded and classified like any frame received later

    def encode(self, frame: dict[str, Any]) -> dict[str, Any]:
        kind = frame.get("type")
        wire_type = OUTGOING_TYPES.get(kind)  # type: ignore[arg-type]
        if wire_type is None:
            raise OperationUnsupported(str(kind), self.dialect.name, "it has no entry in OUTGOING_TYPES")
        # CHANGE: your envelope. Apex frames are flat; a platform may want {"type", "payload": {...}}.
        wire: dict[str, Any] = {"type": wire_type}
        for key, value in frame.items():
            if key != "type":
                wire[FIELDS.get(key, key)] = value
        return wire

    def classify(self, wire: dict[str, Any]) -> dict[str, Any]:
        kind = wire.get("type")
        canonical_type = INCOMING_TYPES.get(kind) if isinstance(kind, str) else None
        if canonical_type is None:
            # CHANGE: map your other events. Progress of a run: {"type": "agent_progress",
            # "event": ..., "message_id": ...}; a heartbeat: {"type": "keepalive"}. Anything else
            # is kept in the History as unclassified, and the checks ignore it.
            return {"type": "unclassified", "wire_type": kind}
        # CHANGE: unwrap your envelope (fields under "data" or "payload"?) and rename the fields.
        frame: dict[str, Any] = {"type": canonical_type}
        for key, value in wire.items():
            if key != "type":
                frame[WIRE_FIELDS.get(key, key)] = value
        return frame

    def reply_to_client(self, canonical: dict[str, Any]) -> dict[str, Any] | None:
        # CHANGE if your server sends JSON keep-alives that need an answer: return the wire
        # frame to send back at once (e.g. {"type": "pong"} for a canonical keepalive).
        return None


class TemplateDialect(Dialect):
    """The apex protocol, written out explicitly: the starting point of your own dialect."""

    # CHANGE: your dialect's name (the log says "dialect '<name>'"), and the rest of these.
    name: ClassVar[str] = "template"
    # Where the token may go, the default first: "header" (Authorization: Bearer), "query",
    # "subprotocol". APEX_AUTH_IN picks another one of these.
    auth_placements: ClassVar[tuple[str, ...]] = ("header",)
    # "opaque": derived test users are <APEX_TOKEN>.<random>; "jwt": minted HS256 JWTs signed
    # with APEX_JWT_SECRET (subject = the test user).
    token_kind: ClassVar[str] = "opaque"
    description: ClassVar[str] = "the apex protocol of docs/protocol.md, spelt out (a template)"
    # Which built-in mock a client of this dialect can talk to ("apex" or "netra"); None when
    # none can: the suites then need a real server (-V resources/variables/staging.py).
    mock_dialect: ClassVar[str | None] = "apex"

    def connect_args(self, url: str, token: str | None) -> ConnectArgs:
        if token is None:  # Connect ... authenticate=False: send no credentials
            return ConnectArgs(url)
        # CHANGE: where your platform wants the token (and list it in auth_placements).
        if self.auth_in == "query":
            return ConnectArgs(with_query(url, token=token))
        if self.auth_in == "subprotocol":
            return ConnectArgs(url, subprotocols=[f"bearer.{token}"])
        return ConnectArgs(url, {"Authorization": f"Bearer {token}"})

    def codec(self, user_key: str | None = None) -> Codec:
        # user_key names the test user (same key: same user), for state shared by a user's
        # connections (the netra dialect keeps the user's thread there).
        return TemplateCodec(self)
