"""Session.request, the keyword sessions' round trip: the reply found by its request_id, a reply
that never comes, an error reply. Against a scripted in-process server; no measured time."""

from __future__ import annotations

import orjson
import pytest
from fakes import run
from MessagingLibrary.engine.history import History
from MessagingLibrary.engine.session import ServerError, Session, WaitTimeout
from websockets.asyncio.server import serve


async def _answering(ws) -> None:
    """session_started, then: get_agent_state answered (after an unrelated frame), error for
    'explode', nothing at all for anything else."""
    await ws.send(orjson.dumps({"type": "session_started", "queued": 0}).decode())
    async for raw in ws:
        frame = orjson.loads(raw)
        if frame["type"] == "get_agent_state":
            await ws.send(orjson.dumps({"type": "agent_state", "request_id": "someone-else"}).decode())
            await ws.send(orjson.dumps({"type": "agent_state", "request_id": frame["request_id"], "state": 7}).decode())
        elif frame["type"] == "explode":
            await ws.send(orjson.dumps({"type": "error", "request_id": frame["request_id"], "code": "boom"}).decode())


async def _with_session(check) -> None:
    async with serve(_answering, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        session = Session("s", f"ws://127.0.0.1:{port}/ws", History(), token="t", ping_interval=None)
        await session.open(5.0)
        try:
            await check(session)
        finally:
            await session.close(2.0)


def test_the_reply_is_the_one_echoing_the_request_id():
    async def check(session: Session) -> None:
        reply = await session.request({"type": "get_agent_state"}, 5.0)
        assert reply["state"] == 7 and reply["request_id"].startswith("s-r")
        assert session._pending == {}

    run(_with_session(check))


def test_a_request_never_answered_times_out_naming_it_and_is_forgotten():
    async def check(session: Session) -> None:
        with pytest.raises(WaitTimeout, match=r"^No reply to silence \(request_id s-r\d+\) within 0\.2 s on connection 's'\.$"):
            await session.request({"type": "silence"}, 0.2)
        assert session._pending == {}
        assert (await session.request({"type": "get_agent_state"}, 5.0))["state"] == 7  # still usable

    run(_with_session(check))


def test_an_error_reply_raises_naming_its_code():
    async def check(session: Session) -> None:
        with pytest.raises(ServerError, match="server answered error 'boom'"):
            await session.request({"type": "explode"}, 5.0)

    run(_with_session(check))
