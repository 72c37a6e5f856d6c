"""Keyword components, one class per topic."""

from .checks import CheckKeywords
from .connection import ConnectionKeywords
from .mock_server import MockServerKeywords
from .offline import OfflineQueueKeywords
from .reporting import ReportingKeywords
from .resources import ResourceKeywords
from .responses import ResponseKeywords
from .sending import SendingKeywords
from .state import StateKeywords

__all__ = [
    "CheckKeywords",
    "ConnectionKeywords",
    "MockServerKeywords",
    "OfflineQueueKeywords",
    "ReportingKeywords",
    "ResourceKeywords",
    "ResponseKeywords",
    "SendingKeywords",
    "StateKeywords",
]
