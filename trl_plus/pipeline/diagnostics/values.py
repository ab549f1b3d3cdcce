"""Small helpers every diagnostic shares: reading a number that may be missing, and
writing two numbers so that they read apart."""

from __future__ import annotations

import math


def num(x) -> float | None:
    """``x`` as a Python float, or None when missing or not finite."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_pair(a: float, b: float, signed: bool = False, least: int = 1, most: int = 4) -> tuple[str, str]:
    """Format two numbers with the fewest decimals (at least ``least``) that tell them apart,
    so a note never reads "rose from 0.9 to 0.9"."""
    spec = "+" if signed else ""
    for digits in range(least, most + 1):
        sa, sb = f"{a:{spec}.{digits}f}", f"{b:{spec}.{digits}f}"
        if sa != sb:
            return sa, sb
    return sa, sb
