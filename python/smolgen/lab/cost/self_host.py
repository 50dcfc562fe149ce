"""What a rented GPU costs per 1M tokens, per day and per month, from its hourly price and
the throughput it reaches (given, or measured by smolgen's own benchmark)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ...errors import InvalidArgumentError, ThroughputUnavailableError
from .money import (
    _MILLION,
    _SECONDS_PER_HOUR,
    DEFAULT_DAYS_PER_MONTH,
    Number,
    _dec,
    _num,
)
from .prices import PriceTable, default_prices


def measured_throughput(model: str = "smollm2-135m-instruct", **options: Any) -> float:
    """Decode throughput in tokens/s measured on this machine by smolgen's own benchmark.

    Raises:
        ThroughputUnavailableError: this build has no benchmark to measure with; pass a
            throughput number instead.
    """
    try:
        from smolgen import bench
    except ImportError as exc:
        raise ThroughputUnavailableError(
            f"cannot measure throughput: smolgen's benchmark did not load ({exc}); "
            "pass tokens_per_second instead"
        ) from exc
    return float(bench.measured_throughput(model=model, **options))


@dataclass(frozen=True)
class SelfHostEstimate:
    """A rented GPU's cost, with every input echoed.

    Attributes:
        gpu_hourly: dollars per hour for the GPU (or the instance).
        tokens_per_second: generation throughput while busy, or None when not known.
        utilisation: the share of paid hours spent generating (0-1]; idle paid time is the
            commonest reason self-hosting costs more than planned.
        hours_per_day: hours paid for each day (24 for an always-on server).
        days_per_month: days in the monthly figure.
        gpu: the GPU's name, when it came from the price table.
        throughput_source: ``"given"``, ``"price table: <what it was quoted for>"`` or
            ``"measured: ..."``.
    """

    gpu_hourly: Decimal
    tokens_per_second: Decimal | None
    utilisation: Decimal = Decimal(1)
    hours_per_day: Decimal = Decimal(24)
    days_per_month: Decimal = Decimal(DEFAULT_DAYS_PER_MONTH)
    gpu: str = ""
    throughput_source: str = "given"

    @property
    def tokens_per_hour(self) -> Decimal | None:
        """Tokens generated per paid hour: ``tokens/s x 3600 x utilisation``."""
        if self.tokens_per_second is None:
            return None
        return self.tokens_per_second * _SECONDS_PER_HOUR * self.utilisation

    @property
    def cost_per_mtok(self) -> Decimal | None:
        """Dollars per 1M generated tokens: ``$/h / (tokens/s x 3600 x utilisation) x 1M``."""
        per_hour = self.tokens_per_hour
        if not per_hour:
            return None
        return self.gpu_hourly * _MILLION / per_hour

    @property
    def daily_cost(self) -> Decimal:
        """Dollars a day: ``$/h x hours paid``, whatever the traffic."""
        return self.gpu_hourly * self.hours_per_day

    @property
    def monthly_cost(self) -> Decimal:
        """Dollars a month."""
        return self.daily_cost * self.days_per_month

    @property
    def capacity_tokens_per_day(self) -> Decimal | None:
        """The most tokens one GPU serves a day: ``tokens_per_hour x hours paid``."""
        per_hour = self.tokens_per_hour
        return None if per_hour is None else per_hour * self.hours_per_day

    def gpus_for(self, tokens_per_day: Decimal) -> int:
        """GPUs needed to generate ``tokens_per_day`` (1 when the throughput is unknown)."""
        capacity = self.capacity_tokens_per_day
        return max(1, math.ceil(tokens_per_day / capacity)) if capacity else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: inputs, then results."""
        return {
            "inputs": {
                "gpu": self.gpu,
                "gpu_hourly": _num(self.gpu_hourly),
                "tokens_per_second": _num(self.tokens_per_second),
                "throughput_source": self.throughput_source,
                "utilisation": _num(self.utilisation),
                "hours_per_day": _num(self.hours_per_day),
                "days_per_month": _num(self.days_per_month),
            },
            "tokens_per_hour": _num(self.tokens_per_hour),
            "cost_per_mtok": _num(self.cost_per_mtok),
            "daily_cost": _num(self.daily_cost),
            "monthly_cost": _num(self.monthly_cost),
            "capacity_tokens_per_day": _num(self.capacity_tokens_per_day),
        }


Throughput = Number | Callable[[], Number] | None


def self_host_cost(
    gpu_hourly: Number | str | None = None,
    tokens_per_second: Throughput = None,
    *,
    gpu: str | None = None,
    utilisation: Number = 1,
    hours_per_day: Number = 24,
    days_per_month: Number = DEFAULT_DAYS_PER_MONTH,
    measure: bool = False,
    model: str = "smollm2-135m-instruct",
    price_table: PriceTable | None = None,
) -> SelfHostEstimate:
    """Cost of serving from a rented GPU.

    Args:
        gpu_hourly: dollars per hour; may be omitted when ``gpu`` names a table entry.
        tokens_per_second: generation throughput: a number, a callable returning one (called
            once), or None (break-even still works; cost per token does not).
        gpu: a GPU from the price table (``"a100-80gb"``), for its price and quoted throughput.
        utilisation: the share of paid hours spent generating, in (0, 1].
        hours_per_day: hours paid each day, in (0, 24].
        days_per_month: days in the monthly figure.
        measure: measure throughput on this machine with smolgen's benchmark for ``model``.
        model: the model to measure when ``measure`` is set.
        price_table: where ``gpu`` is looked up.

    Example:
        >>> est = self_host_cost(1.99, 200)
        >>> format_usd(est.cost_per_mtok), format_usd(est.daily_cost)
        ('$2.76', '$47.76')
    """
    name, source = "", "given"
    quoted: Decimal | None = None
    quoted_source = "price table"
    if gpu is not None:
        entry = (price_table or default_prices()).gpu(gpu)
        name, quoted = entry.gpu, entry.tokens_per_second
        if entry.note:  # what the quoted throughput is for: usually not the user's model
            quoted_source = f"price table: {entry.note}"
        if gpu_hourly is None:
            gpu_hourly = entry.hourly
    if gpu_hourly is None:
        raise InvalidArgumentError("give the GPU's price per hour, or a GPU from the price table")

    tps: Decimal | None
    if measure:
        value = measured_throughput(model=model)
        tps, source = _dec(value, "measured throughput", positive=True), f"measured: {model}"
    elif callable(tokens_per_second):
        tps = _dec(tokens_per_second(), "tokens_per_second", positive=True)
        source = "measured"
    elif tokens_per_second is not None:
        tps = _dec(tokens_per_second, "tokens_per_second", positive=True)
    elif quoted is not None:
        tps, source = quoted, quoted_source
    else:
        tps, source = None, "unknown"

    util = _dec(utilisation, "utilisation", positive=True)
    if util > 1:
        raise InvalidArgumentError("utilisation is a share of paid time: at most 1")
    hours = _dec(hours_per_day, "hours_per_day", positive=True)
    if hours > 24:
        raise InvalidArgumentError("hours_per_day is at most 24")
    return SelfHostEstimate(
        gpu_hourly=_dec(gpu_hourly, "gpu_hourly", positive=True),
        tokens_per_second=tps,
        utilisation=util,
        hours_per_day=hours,
        days_per_month=_dec(days_per_month, "days_per_month", positive=True),
        gpu=name,
        throughput_source=source,
    )
