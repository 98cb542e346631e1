"""Wire formats: messages, codecs, and the bytes that are counted.

message.py (what a client sends), bitstream.py (vectorised bit fields), codecs.py (position and
value codecs), encoder.py (header + codecs <-> bytes), bounds.py (bit floors, per-codec costs),
downlink.py (the server's broadcast and its bits).
"""

from .bounds import bits_table, log2_binom, message_bound_bits
from .codecs import POSITION_CODECS, VALUE_CODECS
from .downlink import DOWNLINKS, Downlink
from .encoder import Encoded, WireFormat
from .message import Message

__all__ = [
    "POSITION_CODECS", "VALUE_CODECS", "Encoded", "WireFormat", "Message",
    "bits_table", "log2_binom", "message_bound_bits", "DOWNLINKS", "Downlink",
]
