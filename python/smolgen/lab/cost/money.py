"""Money and counts: user numbers to ``Decimal``, dollars and token counts for people."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from ...errors import InvalidArgumentError

#: Days in the "monthly" figures unless told otherwise.
DEFAULT_DAYS_PER_MONTH = 30

_MILLION = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)

Number = int | float | str | Decimal


def _dec(value: Number | None, what: str, *, positive: bool = False) -> Decimal:
    """Convert a user-supplied number to Decimal (floats through their shortest repr)."""
    if value is None or isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a number, not {value!r}")
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value).replace(",", ""))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidArgumentError(f"{what} must be a number, not {value!r}") from exc
    if not result.is_finite():
        raise InvalidArgumentError(f"{what} must be finite, not {value!r}")
    if result < 0 or (positive and result == 0):
        raise InvalidArgumentError(f"{what} must be {'above' if positive else 'at least'} 0")
    return result


def _num(value: Decimal | None) -> float | None:
    """Decimal to float for JSON output."""
    return None if value is None else float(value)


def format_usd(amount: Decimal | float | int, places: int | None = None) -> str:
    """Format dollars: ``$1,500.00``; amounts under a cent keep three significant digits
    (``$0.0006``, ``$0.00363``)."""
    value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    small = places is None and value != 0 and abs(value) < Decimal("0.01")
    if places is None:
        places = min(10, 2 - value.copy_abs().adjusted()) if small else 2
    quantum = Decimal(1).scaleb(-places)
    rounded = value.quantize(quantum, rounding=ROUND_HALF_UP)
    sign = "-" if rounded < 0 else ""
    text = f"{abs(rounded):,.{places}f}"
    if small:
        text = text.rstrip("0")
    return f"{sign}${text}"


def format_tokens(count: Decimal | float | int) -> str:
    """Format a token or request count: ``950``, ``72.5K``, ``4.78M``, ``1.2B``."""
    value = float(count)
    if abs(value) < 1e3:
        return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
    for limit, suffix in ((1e3, "K"), (1e6, "M"), (1e9, "B")):
        scaled = f"{value / limit:.3g}"
        if abs(float(scaled)) < 1000:  # 999,999 is "1M", not "1e+03K"
            return f"{scaled}{suffix}"
    return f"{value:,.0f}"
