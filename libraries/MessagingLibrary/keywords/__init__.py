"""Keyword components, one class per topic."""

from .agents import AgentRunKeywords
from .checks import CheckKeywords
from .connection import ConnectionKeywords
from .load import LoadKeywords
from .mock_server import MockServerKeywords
from .offline import OfflineQueueKeywords
from .proxy import FaultProxyKeywords
from .reporting import ReportingKeywords
from .resources import ResourceKeywords
from .responses import ResponseKeywords
from .sending import SendingKeywords
from .state import StateKeywords

__all__ = [
    "AgentRunKeywords",
    "CheckKeywords",
    "ConnectionKeywords",
    "FaultProxyKeywords",
    "LoadKeywords",
    "MockServerKeywords",
    "OfflineQueueKeywords",
    "ReportingKeywords",
    "ResourceKeywords",
    "ResponseKeywords",
    "SendingKeywords",
    "StateKeywords",
]
