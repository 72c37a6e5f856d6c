"""Apex mock: a WebSocket server speaking the Apex chat protocol with real semantics and fault modes.

Run ``apex-mock --help`` (or ``python -m apex_mock --help``). Programmatic use::

    server = MockServer(faults={"reorder"})
    port = await server.start("127.0.0.1", 0)
    ...
    await server.stop()
"""

from .core import Settings, UserCore, user_id_for_token
from .faults import FAULTS, FaultSet, describe_faults, parse_faults
from .offline import OfflineQueue
from .server import MockServer

__all__ = [
    "FAULTS",
    "FaultSet",
    "MockServer",
    "OfflineQueue",
    "Settings",
    "UserCore",
    "describe_faults",
    "parse_faults",
    "user_id_for_token",
]
