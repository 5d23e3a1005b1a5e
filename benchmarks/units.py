"""How figures are printed: milliseconds and ratios, about three significant digits."""

from __future__ import annotations

__all__ = ["ms", "times"]


def ms(value: float) -> str:
    """Milliseconds with about three significant digits, never in exponent form."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if value >= 0.01 else f"{value:.4f}"


def times(value: float) -> str:
    """A ratio: ``0.85x``, ``12.3x``... ``1,234x``."""
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"
