"""The bare pair's server: a minimal WebSocket echo server (websockets' asyncio API).

Every text frame it receives is sent straight back, unparsed. Same transport settings as the
mock (no compression, no keepalive pings, 1 MiB frames, backlog 1024), uvloop when installed
unless ``--no-uvloop``. Prints ``bare-echo listening on ws://HOST:PORT/`` once it listens;
stops on SIGTERM or SIGINT.

    python benchmarks/bare_echo_server.py --port 0 [--no-uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def serve_until_stopped(host: str, port: int) -> None:
    async with serve(echo, host, port, compression=None, max_size=2**20, ping_interval=None, backlog=1024) as server:
        port = server.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"bare-echo listening on ws://{host}:{port}/", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args()
    factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_until_stopped(args.host, args.port))


if __name__ == "__main__":
    main()
