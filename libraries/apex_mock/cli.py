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
from .agents import STREAM_DEFAULTS, parse_stream_spec
from .core import DEFAULT_LIMITS, SETTING_LIMITS, Limits
from .offline import OVERFLOW_POLICIES
from .netra import DEFAULT_HANDSHAKE_DELAY_MS, DEFAULT_HEARTBEAT_S, JWT_SECRET_ENV
from .server import DIALECTS, WITHOUT_CHOICES, MockServer


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
    parser.add_argument("--list-faults", action="store_true",
                        help="print every fault mode with its description, one a line, and exit")
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
                        choices=[*sorted(WITHOUT_CHOICES), "all"],
                        help="lack this test-control or query operation, like the public platform: "
                             "apex answers it 'error unsupported', netra 'ack' (repeatable; 'all' "
                             "for every one of: %(choices)s)")
    parser.add_argument("--agent-stream", nargs="?", const="", default=None, metavar="KEY=VALUE,...",
                        help="stream every user's agent runs by default (docs/protocol.md section 4.9): "
                             "agent_progress events before each ai_response; optional settings, e.g. "
                             "thinking_steps=3,tools=0,chunks=4 (keys: "
                             + ", ".join(f"{k}={v:g}" for k, v in STREAM_DEFAULTS.items())
                             + "); default: off, and a session may still turn it on or off with "
                             "configure_session agent_stream")
    parser.add_argument("--dialect", choices=DIALECTS, default="apex",
                        help="wire protocol: apex (docs/protocol.md) or netra, the real platform's "
                             "(JWT auth, handshake, agent events; docs/protocol.md section 13) "
                             "(default: %(default)s)")
    netra = parser.add_argument_group("netra dialect", "options of --dialect netra")
    netra.add_argument("--jwt-secret", metavar="SECRET", default=None,
                       help=f"HS256 secret that verifies the clients' JWTs (default: the environment's "
                            f"{JWT_SECRET_ENV}, else the public development secret of docs/protocol.md; "
                            f"never printed)")
    netra.add_argument("--heartbeat-s", type=_positive_float, default=DEFAULT_HEARTBEAT_S,
                       help="send a heartbeat frame after this many seconds with nothing sent on a "
                            "connection (default: %(default)s)")
    netra.add_argument("--handshake-delay-ms", type=_ms_float, default=DEFAULT_HANDSHAKE_DELAY_MS,
                       help="time between the client's handshake_acknowledged and handshake_complete, "
                            "in which the client's frames are lost as on the real server (default: %(default)s)")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="use the default asyncio loop even if uvloop is installed")
    limits = parser.add_argument_group(
        "limits", "what one user or client can make the mock keep (docs/protocol.md, 'Limits of the mock'); "
                  "each limit reached is counted in server_stats.limits")
    for name, help_text in _LIMIT_HELP.items():
        limits.add_argument("--" + name.replace("_", "-"), dest=name, type=_int_range(1),
                            default=getattr(DEFAULT_LIMITS, name), metavar="N",
                            help=help_text + " (default: %(default)s)")
    return parser


_LIMIT_HELP = {
    "max_id_length": "longest message_id, request_id, shared_state_key, agent name, delivery id, ... "
                     "in characters; longer -> error too_large",
    "max_content_length": "longest content of a user_message or push, in characters; longer -> error too_large",
    "max_history": "processed messages kept per user (processed_message_ids and history); the oldest "
                   "are dropped and agent_state.processed_message_ids_trimmed says how many",
    "max_history_chars": "characters of ids + contents kept per user in that history; the oldest are dropped",
    "max_dedup_ids": "message_ids remembered per user for duplicate detection; the oldest is forgotten "
                     "early (queue_state.dedup_evicted_total)",
    "max_agents": "agents per configure_agents, and target_agents per message; more -> error too_large",
    "max_shared_state_keys": "shared_state keys per agent; the oldest is dropped "
                             "(all_agent_states.shared_state_trimmed)",
    "max_queue_capacity": "largest queue_capacity (--queue-capacity and configure_session); "
                          "larger -> error too_large",
    "max_offline_capacity": "largest offline_capacity (--offline-capacity and configure_session); "
                            "larger -> error too_large",
    "max_users": "users the server keeps; a new one is refused (HTTP 503 on connect, error "
                 "too_many_users on push)",
    "max_outbox_bytes": "unsent output of one connection before the server cuts it off "
                        "(a client that does not read)",
}


async def _serve(args: argparse.Namespace, faults: F.FaultSet, limits: Limits) -> int:
    server = MockServer(
        faults,
        limits=limits,
        processing_ms=args.processing_ms,
        throughput_processing_ms=args.throughput_processing_ms,
        queue_capacity=args.queue_capacity,
        duplicate_window_s=args.duplicate_window_s,
        offline_capacity=args.offline_capacity,
        overflow_policy=args.overflow_policy,
        offline_ttl_s=args.offline_ttl_s,
        without=args.without,
        dialect=args.dialect,
        jwt_secret=args.jwt_secret,
        heartbeat_s=args.heartbeat_s,
        handshake_delay_ms=args.handshake_delay_ms,
        agent_stream=args.agent_stream,
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
    # Launchers parse this line (its last word is the URL) and expect nothing more from an apex
    # mock; a netra mock says so on a second line (never the secret, only where it came from).
    print(f"apex-mock listening on {server.url}", flush=True)
    if server.dialect != "apex":
        netra = server._netra
        source = netra.secret_source if netra is not None else "?"
        print(f"apex-mock dialect: {server.dialect} (JWT HS256, secret: {source})", flush=True)
    await stop.wait()
    logging.getLogger("apex_mock").info('{"event":"shutdown_requested"}')
    await server.stop()
    return 0


def _usage_error(message: str) -> int:
    """``apex-mock: <message>`` as one line on stderr; exit code 2."""
    sys.stderr.write(f"apex-mock: {message}\n")
    sys.stderr.flush()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_faults:
        print(F.describe_faults(indent=""), flush=True)
        return 0
    try:
        faults = F.parse_faults(args.fault)
    except F.UnknownFault as exc:  # one line: it is shown wherever the start fails (a Robot suite setup)
        return _usage_error(str(exc))
    except F.FaultValueError as exc:
        return _usage_error(f"{exc} ({F.LIST_FAULTS_HINT})")
    if args.agent_stream is not None:
        try:
            args.agent_stream = parse_stream_spec(args.agent_stream)
        except ValueError as exc:
            return _usage_error(f"--agent-stream: {exc}")
    limits = Limits(**{name: getattr(args, name) for name in _LIMIT_HELP})
    for setting, (limit_name, option) in SETTING_LIMITS.items():
        value, limit = getattr(args, setting), getattr(limits, limit_name)
        if value > limit:
            return _usage_error(f"--{setting.replace('_', '-')} {value} is above {option} {limit}")
    _configure_logging(args.log_file)

    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found]

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(args, faults, limits))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
