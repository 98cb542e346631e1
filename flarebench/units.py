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


BIT_UNITS = {"bit": 1, "bits": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bits(text: str | float) -> float:
    """``'1e6'`` -> 1e6, ``'2.5 Mib'`` -> 2.5 * 2**20 (bits; the binary prefixes human_bits prints, Kib to
    Tib; no bytes). ValueError on anything else or on a value that is not a positive finite number."""
    if isinstance(text, (int, float)):
        number, unit = float(text), "bit"
    else:
        s = str(text).strip().replace("_", "")
        head = s.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ").strip()
        unit = s[len(head):].strip().lower() or "bit"
        if unit not in BIT_UNITS or not head:
            raise ValueError(f"a number of bits (e.g. 1e6 or 2.5Mib; units bit, Kib, Mib, Gib, Tib), got {text!r}")
        try:
            number = float(head)
        except ValueError:
            raise ValueError(f"a number of bits (e.g. 1e6 or 2.5Mib; units bit, Kib, Mib, Gib, Tib), got {text!r}") from None
    bits = number * BIT_UNITS[unit]
    if not math.isfinite(bits) or bits <= 0:
        raise ValueError(f"a positive number of bits, got {text!r}")
    return bits


def human_bits_pm(mean: float, half: float) -> str:
    """``mean +- half`` in mean's unit: ``'1.74 ±0.21 Mib'``; ``half`` NaN: ``human_bits(mean)``."""
    if half is None or math.isnan(half):
        return human_bits(mean)
    for unit, scale in (("Tib", 2**40), ("Gib", 2**30), ("Mib", 2**20), ("Kib", 2**10), ("bit", 1)):
        if abs(mean) >= scale or scale == 1:
            digits = 0 if scale == 1 else 2
            return f"{mean / scale:.{digits}f} ±{half / scale:.{digits}f} {unit}"


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


__all__ = ["human_bits", "human_bits_pm", "human_seconds", "parse_bits", "BIT_UNITS"]
