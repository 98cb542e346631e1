"""Wire formats: messages, codecs, and the bytes that are counted."""

from .codecs import POSITION_CODECS, VALUE_CODECS
from .encoder import Encoded, WireFormat
from .message import Message

__all__ = ["POSITION_CODECS", "VALUE_CODECS", "Encoded", "WireFormat", "Message"]
