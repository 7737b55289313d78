"""Numbers for people: as many digits as the figure's spread supports, percentages, counts."""

from __future__ import annotations

import math

MISSING = "–"


def _absent(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rounded(value, spread: float | None = None) -> str:
    """value with as many significant digits as its relative spread supports: 3 when the spread is
    unknown, 2 at 10% and more, 4 at most; thousands separated."""
    if _absent(value):
        return MISSING
    value = float(value)
    digits = 3 if _absent(spread) or spread <= 0 else min(4, max(2, math.ceil(-math.log10(spread)) + 1))
    if value == 0:
        return "0"
    value = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def pct(value, decimals: int = 0) -> str:
    """A fraction as a percentage (0.42 -> '42')."""
    return MISSING if _absent(value) else f"{100 * value:.{decimals}f}"


def count(value) -> str:
    return MISSING if _absent(value) else f"{int(value)}"


def text(value) -> str:
    return MISSING if _absent(value) else str(value)
