"""The bare picows pair's client: the same minimal open-loop sender as ``bare_client.py``, on picows.

Scheduling is copied from ``bare_client.open_loop`` (and so from the engine):

* message ``k`` is due at ``start + k / rate`` (fixed before the first send) and goes to
  connection ``k mod C``; a sender that is behind sends late, never re-times;
* it sleeps until the next message is due, never for less than 1 ms; while catching up it
  yields to the loop every 64 sends;
* latency = receive time - intended send time (``time.perf_counter_ns``), kept in a list;
* frames are ``orjson.dumps({"type": "throughput_test", "message_id": ..., "sequence_id": i})``
  sent as text; replies are matched by ``message_id`` (anything else is ignored, so the client
  also works against the mock).

picows differs from websockets in its model, not in the work asked: a reply is handled in a
callback (``WSListener.on_ws_frame``) straight from the protocol, with no reader task and no
queue, and ``send`` writes to the transport synchronously (no await, no backpressure wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bare_client import LATE_NS, YIELD_EVERY, percentile_ns

MAX_FRAME = 2**20
TEXT = WSMsgType.TEXT


class Receiver(WSListener):
    """Hands every text frame's payload to ``on_text`` (set after connecting); answers a close."""

    def __init__(self) -> None:
        self.on_text: Callable[[bytes], None] | None = None
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == TEXT:
            handler = self.on_text
            if handler is not None:
                handler(frame.get_payload_as_bytes())
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def connect(
    url: str, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[WSTransport, Receiver]:
    transport, listener = await asyncio.wait_for(
        ws_connect(
            Receiver, url, extra_headers=headers, max_frame_size=MAX_FRAME, websocket_handshake_timeout=timeout
        ),
        timeout,
    )
    return transport, listener  # type: ignore[return-value]


async def open_connections(
    url: str, count: int, concurrency: int = 100, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> list[tuple[WSTransport, Receiver]]:
    """Open ``count`` connections, at most ``concurrency`` handshakes at once (the engine's default)."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> tuple[WSTransport, Receiver]:
        async with gate:
            return await connect(url, headers, timeout)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_connections(connections: list[tuple[WSTransport, Receiver]]) -> None:
    async def close(transport: WSTransport) -> None:
        with contextlib.suppress(Exception):
            if not transport.is_disconnected:
                transport.send_close()
                await asyncio.wait_for(transport.wait_disconnected(), 2.0)
        if not transport.is_disconnected:
            transport.disconnect(graceful=False)

    await asyncio.gather(*(close(t) for t, _ in connections), return_exceptions=True)


async def open_loop(
    url: str,
    rate: float,
    seconds: float,
    connections: int = 1,
    run_id: str = "picows",
    drain_s: float = 2.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send ``round(rate * seconds)`` messages at a constant rate; return counts and latency (ns)."""
    total = round(rate * seconds)
    interval_ns = 1e9 / rate
    prefix = f"{run_id}-"
    plen = len(prefix)
    pairs = await open_connections(url, connections, headers=headers)
    answered = bytearray(total)
    latencies: list[int] = []
    counts = {"answered": 0, "duplicated": 0, "missed_sends": 0, "sent": 0}
    done = asyncio.Event()
    clock = time.perf_counter_ns
    start = clock() + 20_000_000
    loads = orjson.loads

    def on_text(raw: bytes) -> None:
        ts = clock()
        message_id = loads(raw).get("message_id")
        if not isinstance(message_id, str) or not message_id.startswith(prefix):
            return  # e.g. the mock's session_started
        k = int(message_id[plen:])
        if answered[k]:
            counts["duplicated"] += 1
            return
        answered[k] = 1
        latencies.append(ts - (start + int(k * interval_ns)))
        counts["answered"] += 1
        if counts["answered"] == total:
            done.set()

    for _, listener in pairs:
        listener.on_text = on_text
    transports = [t for t, _ in pairs]
    try:
        k = burst = 0
        while k < total:
            due = start + int(k * interval_ns)
            now = clock()
            if due > now:
                burst = 0
                await asyncio.sleep(max(0.001, (due - now) / 1e9))  # as the engine: never under 1 ms
                continue
            if now - due > LATE_NS:
                counts["missed_sends"] += 1
            transport = transports[k % connections]
            if transport.is_disconnected:
                break
            frame = {"type": "throughput_test", "message_id": f"{prefix}{k}", "sequence_id": k // connections}
            transport.send(TEXT, orjson.dumps(frame))
            counts["sent"] += 1
            k += 1
            burst += 1
            if burst >= YIELD_EVERY:
                burst = 0
                await asyncio.sleep(0)
        if total:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), drain_s)
    finally:
        for _, listener in pairs:
            listener.on_text = None
        await close_connections(pairs)
    latencies.sort()
    return {
        "scheduled": total,
        **counts,
        "lost": total - counts["answered"],
        "p50_ns": percentile_ns(latencies, 50),
        "p99_ns": percentile_ns(latencies, 99),
        "max_ns": latencies[-1] if latencies else 0,
    }
