"""The cost model: what a workload costs through an API, on your own GPU, and where they
cross.

Every figure is computed from inputs that are echoed back in the result, so a reader can check
the arithmetic and change any assumption. Money is ``decimal.Decimal`` throughout: the worked
example in the source texts (5,000 requests a day x 2,000 input + 500 output tokens at $2.50 /
$10.00 per 1M tokens) comes out at exactly $50.00 a day, $1,500.00 a month and $0.01 a request.

- :func:`estimate_monthly_cost`: an API workload's daily, monthly and per-request cost.
- :func:`self_host_cost`: a rented GPU's cost per 1M tokens, per day and per month.
- :func:`batch_job_cost`: an offline batch job's node-hours, nodes and cost on your own machines.
- :func:`break_even`: the daily volume at which the GPU and the API cost the same.
- :func:`cost_curve` and :func:`plot_cost_curve`: monthly cost against daily volume, both ways.

Laid out as the questions are asked: ``prices`` (what models and GPUs cost, with sources),
``api`` (a workload through an API), ``self_host`` (a rented GPU), ``break_even`` (where they
cross, and the curve); ``money`` formats dollars and token counts.
"""

from __future__ import annotations

from ...errors import ThroughputUnavailableError
from .api import ApiCostEstimate, estimate_monthly_cost, request_cost
from .batch_job import ApiComparison, BatchJobEstimate, batch_job_cost
from .break_even import BreakEven, CurvePoint, break_even, cost_curve, plot_cost_curve
from .money import DEFAULT_DAYS_PER_MONTH, format_tokens, format_usd
from .prices import GpuPrice, ModelPrice, PriceTable, default_prices, load_prices
from .self_host import SelfHostEstimate, measured_throughput, self_host_cost

__all__ = [
    "DEFAULT_DAYS_PER_MONTH",
    "ApiComparison",
    "ApiCostEstimate",
    "BatchJobEstimate",
    "BreakEven",
    "CurvePoint",
    "GpuPrice",
    "ModelPrice",
    "PriceTable",
    "SelfHostEstimate",
    "ThroughputUnavailableError",
    "batch_job_cost",
    "break_even",
    "cost_curve",
    "default_prices",
    "estimate_monthly_cost",
    "format_tokens",
    "format_usd",
    "load_prices",
    "measured_throughput",
    "plot_cost_curve",
    "request_cost",
    "self_host_cost",
]
