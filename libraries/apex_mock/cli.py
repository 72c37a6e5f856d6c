"""Command line: ``apex-mock`` / ``python -m apex_mock``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence

from . import faults as F
from .offline import OVERFLOW_POLICIES
from .server import WITHOUT_CHOICES, MockServer


class _JsonLineFormatter(logging.Formatter):
    """One line per event: ISO time, level, then the event's JSON (or the message)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


def _configure_logging(path: str | None) -> None:
    handler: logging.Handler
    if path:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(_JsonLineFormatter())
    else:
        handler = logging.NullHandler()
    for name, level in (("apex_mock", logging.INFO), ("websockets", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def _int_range(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"must be {bound}: {value}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text}")
    return value


def _ms_float(text: str) -> float:
    """A number of milliseconds, 0..60000 (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 60_000:
        raise argparse.ArgumentTypeError(f"must be a number in 0..60000: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apex-mock",
        description=(
            "Mock Apex chat server: JSON over WebSocket at ws://HOST:PORT/ws, "
            "'Authorization: Bearer <token>' on the handshake, GET /health -> 200 ok. "
            "Per-user semantics are real (ordering, idempotency, backpressure, agent state, "
            "offline queue); "
            "--fault breaks exactly one guarantee, deterministically."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "fault modes (--fault NAME or --fault NAME=VALUE, repeatable or comma-separated;\n"
            "NAME[=VALUE] marks a fault that takes a value; its default is in the description):\n"
            + F.describe_faults()
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=_int_range(0, 65535), default=8765,
                        help="port to bind; 0 picks a free port (default: %(default)s)")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME[=VALUE]",
                        help="enable a fault mode, e.g. reorder or throttle=2000 (repeatable or "
                             "comma-separated; see the list below)")
    parser.add_argument("--log-file", metavar="PATH",
                        help="append the server log here, one line per event (default: no log)")
    parser.add_argument("--processing-ms", type=_int_range(0, 60_000), default=10,
                        help="time to process one user_message, per user (default: %(default)s)")
    parser.add_argument("--throughput-processing-ms", type=_ms_float, default=0.0,
                        help="time to process one throughput_test, per user; fractions work on "
                             "average, 0.5 -> about 2000 per second (default: %(default)s)")
    parser.add_argument("--queue-capacity", type=_int_range(1), default=500,
                        help="waiting messages per user before queue_full (default: %(default)s)")
    parser.add_argument("--duplicate-window-s", type=_non_negative_float, default=300.0,
                        help="how long a message_id is remembered per user (default: %(default)s)")
    parser.add_argument("--offline-capacity", type=_int_range(1), default=100,
                        help="offline entries held per user, waiting + unacked (default: %(default)s)")
    parser.add_argument("--overflow-policy", choices=OVERFLOW_POLICIES, default="drop_oldest",
                        help="what a full offline queue does with one more message (default: %(default)s)")
    parser.add_argument("--offline-ttl-s", type=_positive_float, default=300.0,
                        help="seconds an offline entry may wait before it expires (default: %(default)s)")
    parser.add_argument("--without", action="append", default=[], metavar="OPERATION",
                        choices=sorted(WITHOUT_CHOICES),
                        help="answer this test-control operation with 'error unsupported', like a "
                             "production-like server (repeatable: %(choices)s)")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="use the default asyncio loop even if uvloop is installed")
    return parser


async def _serve(args: argparse.Namespace, faults: F.FaultSet) -> int:
    server = MockServer(
        faults,
        processing_ms=args.processing_ms,
        throughput_processing_ms=args.throughput_processing_ms,
        queue_capacity=args.queue_capacity,
        duplicate_window_s=args.duplicate_window_s,
        offline_capacity=args.offline_capacity,
        overflow_policy=args.overflow_policy,
        offline_ttl_s=args.offline_ttl_s,
        without=args.without,
    )
    try:
        await server.start(args.host, args.port)
    except OSError as exc:
        print(f"apex-mock: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    print(f"apex-mock listening on {server.url}", flush=True)
    await stop.wait()
    logging.getLogger("apex_mock").info('{"event":"shutdown_requested"}')
    await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = F.parse_faults(args.fault)
    except F.UnknownFault as exc:
        sys.stderr.write(
            f"apex-mock: unknown fault mode(s): {', '.join(exc.names)}\n"
            f"valid fault modes:\n{F.describe_faults()}\n"
        )
        sys.stderr.flush()
        return 2
    except F.FaultValueError as exc:
        sys.stderr.write(f"apex-mock: {exc}\nvalid fault modes:\n{F.describe_faults()}\n")
        sys.stderr.flush()
        return 2
    _configure_logging(args.log_file)

    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found]

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(args, faults))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
