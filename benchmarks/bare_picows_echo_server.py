"""The bare picows pair's server: a minimal WebSocket echo server on picows.

Every text or binary frame it receives is sent straight back, unparsed, as the same type (picows
answers pings itself). Same transport settings as the other servers (no compression, no
keepalive pings, 1 MiB frames, backlog 1024), uvloop when installed unless ``--no-uvloop``.
Prints ``bare-picows-echo listening on ws://HOST:PORT/`` once it listens; stops on SIGTERM or
SIGINT.

``--answer`` makes it a minimal *throughput responder* for the load engine, which wants a
``throughput_response``: each frame goes back with ``"type":"throughput_test"`` replaced by
``"type":"throughput_response"`` (a byte replace, no parsing). ``--reuse-port`` lets several
processes listen on one port (SO_REUSEPORT: the kernel spreads the connections), so the
server is not the bottleneck of a comparison of the engine's workers.

    python benchmarks/bare_picows_echo_server.py --port 0 [--no-uvloop] [--answer] [--reuse-port]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

DATA = (WSMsgType.TEXT, WSMsgType.BINARY)
ASKED, ANSWER = b'"type":"throughput_test"', b'"type":"throughput_response"'


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind in DATA:
            transport.send(kind, frame.get_payload_as_memoryview())
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


class Responder(Echo):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            transport.send(WSMsgType.TEXT, frame.get_payload_as_bytes().replace(ASKED, ANSWER, 1))
        else:
            super().on_ws_frame(transport, frame)


async def serve_until_stopped(host: str, port: int, answer: bool = False, reuse_port: bool = False) -> None:
    listener = Responder if answer else Echo
    server = await ws_create_server(
        lambda _request: listener(), host, port, max_frame_size=2**20, backlog=1024, reuse_port=reuse_port or None
    )
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare-picows-echo listening on ws://{host}:{port}/", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--answer", action="store_true", help="answer throughput_test with throughput_response")
    parser.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: several processes on one port")
    args = parser.parse_args()
    factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_until_stopped(args.host, args.port, args.answer, args.reuse_port))


if __name__ == "__main__":
    main()
