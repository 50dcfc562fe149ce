"""What a workload costs through an API: per request, per day and per month."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .money import (
    _MILLION,
    DEFAULT_DAYS_PER_MONTH,
    Number,
    _dec,
    _num,
)
from .prices import (
    ModelPrice,
    ModelSpec,
    PriceTable,
    _resolve_model,
)


def request_cost(
    input_tokens: Number,
    output_tokens: Number,
    model: ModelSpec = "gpt-4o",
    *,
    price_table: PriceTable | None = None,
) -> Decimal:
    """Dollars for one request: input tokens x input price + output tokens x output price.

    A 4,000-token prompt with a 1,000-token answer at $2.50 / $10.00 per 1M costs $0.02.
    """
    price = _resolve_model(model, price_table)
    return price.cost_of(_dec(input_tokens, "input_tokens"), _dec(output_tokens, "output_tokens"))


@dataclass(frozen=True)
class ApiCostEstimate:
    """An API workload's cost, with every input echoed.

    Attributes:
        price: the model price used (with its source and as-of date).
        requests_per_day: calls a day.
        avg_input_tokens: prompt tokens per call (system prompt and resent history included).
        avg_output_tokens: completion tokens per call.
        days_per_month: days in the monthly figure.
    """

    price: ModelPrice
    requests_per_day: Decimal
    avg_input_tokens: Decimal
    avg_output_tokens: Decimal
    days_per_month: Decimal

    @property
    def model(self) -> str:
        """The model's key."""
        return self.price.model

    @property
    def daily_input_tokens(self) -> Decimal:
        """Input tokens a day."""
        return self.requests_per_day * self.avg_input_tokens

    @property
    def daily_output_tokens(self) -> Decimal:
        """Output tokens a day."""
        return self.requests_per_day * self.avg_output_tokens

    @property
    def input_cost_per_day(self) -> Decimal:
        """Dollars a day for input tokens."""
        return self.daily_input_tokens * self.price.input_per_mtok / _MILLION

    @property
    def output_cost_per_day(self) -> Decimal:
        """Dollars a day for output tokens."""
        return self.daily_output_tokens * self.price.output_per_mtok / _MILLION

    @property
    def daily_cost(self) -> Decimal:
        """Dollars a day."""
        return self.input_cost_per_day + self.output_cost_per_day

    @property
    def monthly_cost(self) -> Decimal:
        """Dollars a month (``daily_cost x days_per_month``)."""
        return self.daily_cost * self.days_per_month

    @property
    def cost_per_request(self) -> Decimal:
        """Dollars a call."""
        return self.price.cost_of(self.avg_input_tokens, self.avg_output_tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: inputs, then results."""
        return {
            "inputs": {
                "model": self.model,
                "requests_per_day": _num(self.requests_per_day),
                "avg_input_tokens": _num(self.avg_input_tokens),
                "avg_output_tokens": _num(self.avg_output_tokens),
                "input_per_mtok": _num(self.price.input_per_mtok),
                "output_per_mtok": _num(self.price.output_per_mtok),
                "days_per_month": _num(self.days_per_month),
                "price_source": self.price.source,
                "price_as_of": self.price.as_of,
            },
            "daily_input_tokens": _num(self.daily_input_tokens),
            "daily_output_tokens": _num(self.daily_output_tokens),
            "input_cost_per_day": _num(self.input_cost_per_day),
            "output_cost_per_day": _num(self.output_cost_per_day),
            "daily_cost": _num(self.daily_cost),
            "monthly_cost": _num(self.monthly_cost),
            "cost_per_request": _num(self.cost_per_request),
        }


def estimate_monthly_cost(
    requests_per_day: Number,
    avg_input_tokens: Number,
    avg_output_tokens: Number,
    model: ModelSpec = "gpt-4o",
    *,
    price_table: PriceTable | None = None,
    days_per_month: Number = DEFAULT_DAYS_PER_MONTH,
) -> ApiCostEstimate:
    """Daily, monthly and per-request cost of an API workload.

    Args:
        requests_per_day: calls a day.
        avg_input_tokens: prompt tokens per call, counted with the model's tokenizer.
        avg_output_tokens: completion tokens per call.
        model: a model name from the price table, a :class:`ModelPrice`, or
            ``(input $ per 1M, output $ per 1M)``.
        price_table: where to look ``model`` up (default: the bundled table).
        days_per_month: days in the monthly figure.

    Example:
        >>> est = estimate_monthly_cost(5000, 2000, 500, (2.50, 10.00))
        >>> [format_usd(x) for x in (est.daily_cost, est.monthly_cost, est.cost_per_request)]
        ['$50.00', '$1,500.00', '$0.01']
    """
    return ApiCostEstimate(
        price=_resolve_model(model, price_table),
        requests_per_day=_dec(requests_per_day, "requests_per_day"),
        avg_input_tokens=_dec(avg_input_tokens, "avg_input_tokens"),
        avg_output_tokens=_dec(avg_output_tokens, "avg_output_tokens"),
        days_per_month=_dec(days_per_month, "days_per_month", positive=True),
    )
