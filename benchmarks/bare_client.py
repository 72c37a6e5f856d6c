"""The bare pair's client: a minimal open-loop sender, a ping-pong loop and a connection opener.

Measured the same way as the library's load engine, with nothing else:

* message ``k`` is due at ``start + k / rate`` (fixed before the first send) and goes to
  connection ``k mod C``; a sender that is behind sends late, never re-times;
* while catching up it yields to the loop every 64 sends (the engine's ``SEND_BATCH``);
* latency = receive time - intended send time (``time.perf_counter_ns``), kept in a list;
* frames are ``orjson.dumps({"type": "throughput_test", "message_id": ..., "sequence_id": i})``
  sent as text; replies are matched by ``message_id`` (anything else is ignored, so the
  client also works against the mock, for a cross-check);
* connections: ``compression=None, ping_interval=None, proxy=None, max_size=1 MiB`` (the
  engine's settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CONNECT_OPTIONS: dict[str, Any] = {"compression": None, "ping_interval": None, "proxy": None, "max_size": 2**20}
YIELD_EVERY = 64
LATE_NS = 10_000_000


def percentile_ns(sorted_ns: list[int], q: float) -> int:
    """Nearest-rank percentile of a sorted list (0 when empty)."""
    if not sorted_ns:
        return 0
    return sorted_ns[max(0, min(len(sorted_ns) - 1, math.ceil(q / 100 * len(sorted_ns)) - 1))]


async def open_connections(
    url: str, count: int, concurrency: int = 100, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> list[ClientConnection]:
    """Open ``count`` connections, at most ``concurrency`` handshakes at once (the engine's default)."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> ClientConnection:
        async with gate:
            return await connect(url, additional_headers=headers, open_timeout=timeout, **CONNECT_OPTIONS)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_connections(connections: list[ClientConnection]) -> None:
    await asyncio.gather(*(asyncio.wait_for(ws.close(), 2.0) for ws in connections), return_exceptions=True)


async def open_loop(
    url: str,
    rate: float,
    seconds: float,
    connections: int = 1,
    run_id: str = "bare",
    drain_s: float = 2.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send ``round(rate * seconds)`` messages at a constant rate; return counts and latency (ns)."""
    total = round(rate * seconds)
    interval_ns = 1e9 / rate
    prefix = f"{run_id}-"
    plen = len(prefix)
    wss = await open_connections(url, connections, headers=headers)
    answered = bytearray(total)
    latencies: list[int] = []
    counts = {"answered": 0, "duplicated": 0, "missed_sends": 0, "sent": 0}
    done = asyncio.Event()
    clock = time.perf_counter_ns
    start = clock() + 20_000_000

    async def read(ws: ClientConnection) -> None:
        loads = orjson.loads
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                ts = clock()
                message_id = loads(raw).get("message_id")
                if not isinstance(message_id, str) or not message_id.startswith(prefix):
                    continue  # e.g. the mock's session_started
                k = int(message_id[plen:])
                if answered[k]:
                    counts["duplicated"] += 1
                    continue
                answered[k] = 1
                latencies.append(ts - (start + int(k * interval_ns)))
                counts["answered"] += 1
                if counts["answered"] == total:
                    done.set()

    readers = [asyncio.create_task(read(ws)) for ws in wss]
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
            frame = {"type": "throughput_test", "message_id": f"{prefix}{k}", "sequence_id": k // connections}
            try:
                await wss[k % connections].send(orjson.dumps(frame), text=True)
            except ConnectionClosed:
                break
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
        await close_connections(wss)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    latencies.sort()
    return {
        "scheduled": total,
        **counts,
        "lost": total - counts["answered"],
        "p50_ns": percentile_ns(latencies, 50),
        "p99_ns": percentile_ns(latencies, 99),
        "max_ns": latencies[-1] if latencies else 0,
    }


async def probe(ws: ClientConnection, i: int) -> None:
    """One round trip: send a latency_probe, await the reply that carries its probe_id."""
    frame = {"type": "latency_probe", "probe_id": i, "client_send_ns": time.monotonic_ns()}
    await ws.send(orjson.dumps(frame), text=True)
    while orjson.loads(await ws.recv()).get("probe_id") != i:
        pass  # not ours (the mock's session_started)


async def ping_pong(url: str, rounds: int, warmup: int = 100, headers: dict[str, str] | None = None) -> list[int]:
    """Sequential round trips on one connection; return each round trip's duration (ns)."""
    clock = time.perf_counter_ns
    times: list[int] = []
    async with connect(url, additional_headers=headers, open_timeout=10, **CONNECT_OPTIONS) as ws:
        for i in range(warmup + rounds):
            started = clock()
            await probe(ws, i)
            if i >= warmup:
                times.append(clock() - started)
    return times
