"""Human-readable units for terminal output (bits, not bytes: 1 Kib = 1024 bits)."""

from __future__ import annotations

import math


def human_bits(bits: float | None) -> str:
    """``123456789`` -> ``'117.74 Mib'`` (binary prefixes on bits: Kib = 2**10 bits, Mib = 2**20, Gib = 2**30, Tib = 2**40)."""
    if bits is None or (isinstance(bits, float) and math.isnan(bits)):
        return "-"
    for unit, scale in (("Tib", 2**40), ("Gib", 2**30), ("Mib", 2**20), ("Kib", 2**10)):
        if abs(bits) >= scale:
            return f"{bits / scale:.2f} {unit}"
    return f"{bits:.0f} bit"


def human_seconds(seconds: float | None) -> str:
    """``75.3`` -> ``'1m15s'``; under a minute: ``'12.3s'``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


__all__ = ["human_bits", "human_seconds"]
