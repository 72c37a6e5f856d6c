"""The apex dialect: the protocol of docs/protocol.md, which is also the canonical vocabulary.

Every frame is already canonical, so the codec is the identity and costs nothing: the session
and the load engine skip its calls (``Codec.identity``).
"""

from __future__ import annotations

from typing import ClassVar

from .base import Codec, Dialect


class ApexCodec(Codec):
    identity: ClassVar[bool] = True


class ApexDialect(Dialect):
    """The apex protocol (docs/protocol.md): the token in ``Authorization: Bearer``."""

    name: ClassVar[str] = "apex"
    auth_placements: ClassVar[tuple[str, ...]] = ("header",)
    token_kind: ClassVar[str] = "opaque"
    description: ClassVar[str] = "the apex protocol of docs/protocol.md (the built-in mock's default)"
    mock_dialect: ClassVar[str | None] = "apex"

    def codec(self, user_key: str | None = None) -> Codec:
        return ApexCodec(self)
