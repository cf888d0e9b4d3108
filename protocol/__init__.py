"""Wire types only (sans-IO): the native protocol's frames and the dialect codec interface."""

from protocol.codec import Codec, NativeCodec, ProtocolError
from protocol.native import (
    ClientFrame,
    Config,
    Error,
    Final,
    Partial,
    Ready,
    ServerFrame,
    Stopped,
    config_from_query,
)

__all__ = [
    "ClientFrame",
    "Codec",
    "Config",
    "Error",
    "Final",
    "NativeCodec",
    "Partial",
    "ProtocolError",
    "Ready",
    "ServerFrame",
    "Stopped",
    "config_from_query",
]
