"""Where the API and the GPU cost the same, and monthly cost against daily volume (with a plot)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ...errors import InvalidArgumentError
from .money import (
    _MILLION,
    _SECONDS_PER_HOUR,
    Number,
    _dec,
    _num,
    format_tokens,
    format_usd,
)
from .prices import (
    ModelPrice,
    ModelSpec,
    PriceTable,
    _resolve_model,
)
from .self_host import SelfHostEstimate

BASES = ("output", "input", "request")


@dataclass(frozen=True)
class BreakEven:
    """The daily volume at which a GPU and an API model cost the same.

    Attributes:
        self_hosted: the GPU side.
        price: the API model's price.
        basis: what the API is charged on: ``"output"`` tokens only (the usual back-of-envelope
            figure), ``"input"`` tokens only, or whole ``"request"``s of ``avg_input_tokens`` +
            ``avg_output_tokens``.
        avg_input_tokens: prompt tokens per call (request basis, or to express the break-even
            in requests).
        avg_output_tokens: completion tokens per call.

    The break-even is ``daily GPU cost / API dollars per token`` (or per request): it does not
    depend on throughput. Throughput decides whether one GPU can carry that volume at all.
    """

    self_hosted: SelfHostEstimate
    price: ModelPrice
    basis: str
    avg_input_tokens: Decimal | None = None
    avg_output_tokens: Decimal | None = None

    @property
    def api_cost_per_request(self) -> Decimal | None:
        """API dollars per call, when the call's size is known."""
        if self.avg_input_tokens is None or self.avg_output_tokens is None:
            return None
        return self.price.cost_of(self.avg_input_tokens, self.avg_output_tokens)

    @property
    def api_per_mtok(self) -> Decimal:
        """API dollars per 1M tokens of the basis (for ``request``: per 1M output tokens, the
        tokens the GPU's throughput counts, with the input's price folded in)."""
        if self.basis == "output":
            return self.price.output_per_mtok
        if self.basis == "input":
            return self.price.input_per_mtok
        per_request = self.api_cost_per_request
        assert per_request is not None and self.avg_output_tokens
        return per_request * _MILLION / self.avg_output_tokens

    @property
    def requests_per_day(self) -> Decimal | None:
        """Break-even calls a day, when the call's size is known."""
        if self.basis == "request":
            per_request = self.api_cost_per_request
            return None if not per_request else self.self_hosted.daily_cost / per_request
        per_call = self.avg_output_tokens if self.basis == "output" else self.avg_input_tokens
        return None if not per_call else self.tokens_per_day / per_call

    @property
    def tokens_per_day(self) -> Decimal:
        """Break-even tokens a day of the basis (``request``: output tokens a day)."""
        if self.api_per_mtok == 0:
            return Decimal("Infinity")
        return self.self_hosted.daily_cost * _MILLION / self.api_per_mtok

    @property
    def monthly_api_cost_at_break_even(self) -> Decimal:
        """The API bill a month at the break-even volume (= the GPU's monthly cost)."""
        return self.self_hosted.monthly_cost

    @property
    def utilisation_needed(self) -> Decimal | None:
        """Share of the GPU's paid hours the break-even volume keeps it busy (None without a
        throughput). Above 1: one GPU cannot serve enough to break even."""
        tps = self.self_hosted.tokens_per_second
        if tps is None:
            return None
        return self.tokens_per_day / (tps * _SECONDS_PER_HOUR * self.self_hosted.hours_per_day)

    @property
    def min_tokens_per_second(self) -> Decimal:
        """Throughput a GPU needs, at the given utilisation and hours, to reach break-even."""
        sh = self.self_hosted
        return self.tokens_per_day / (_SECONDS_PER_HOUR * sh.hours_per_day * sh.utilisation)

    @property
    def feasible(self) -> bool | None:
        """Whether the GPU, at the given utilisation, can serve the break-even volume (then
        more traffic makes self-hosting cheaper). None without a throughput."""
        capacity = self.self_hosted.capacity_tokens_per_day
        if capacity is None:
            return None
        return self.tokens_per_day <= capacity

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: inputs, then results."""
        return {
            "inputs": {
                "model": self.price.model,
                "input_per_mtok": _num(self.price.input_per_mtok),
                "output_per_mtok": _num(self.price.output_per_mtok),
                "price_source": self.price.source,
                "price_as_of": self.price.as_of,
                "basis": self.basis,
                "avg_input_tokens": _num(self.avg_input_tokens),
                "avg_output_tokens": _num(self.avg_output_tokens),
            },
            "self_hosted": self.self_hosted.to_dict(),
            "api_per_mtok": _num(self.api_per_mtok),
            "api_cost_per_request": _num(self.api_cost_per_request),
            "tokens_per_day": _num(self.tokens_per_day),
            "requests_per_day": _num(self.requests_per_day),
            "monthly_cost_at_break_even": _num(self.monthly_api_cost_at_break_even),
            "utilisation_needed": _num(self.utilisation_needed),
            "min_tokens_per_second": _num(self.min_tokens_per_second),
            "feasible": self.feasible,
        }


def break_even(
    self_hosted: SelfHostEstimate,
    model: ModelSpec = "gpt-4o",
    *,
    basis: str | None = None,
    avg_input_tokens: Number | None = None,
    avg_output_tokens: Number | None = None,
    price_table: PriceTable | None = None,
) -> BreakEven:
    """Where the GPU's daily cost equals the API's.

    Args:
        self_hosted: from :func:`self_host_cost`.
        model: the API model (name, :class:`ModelPrice` or ``(input, output)`` $ per 1M).
        basis: ``"output"``, ``"input"`` or ``"request"``; default ``"request"`` when both
            average token counts are given (and output is not 0), else ``"output"``.
        avg_input_tokens: prompt tokens per call.
        avg_output_tokens: completion tokens per call.
        price_table: where ``model`` is looked up.

    Example:
        A GPU at $1.99/h paid 24 h a day costs $47.76 a day; against $10 per 1M output tokens it
        breaks even at 4,776,000 output tokens a day:

        >>> be = break_even(self_host_cost(1.99, 200), (2.50, 10.00), basis="output")
        >>> format_tokens(be.tokens_per_day)
        '4.78M'
    """
    ain = None if avg_input_tokens is None else _dec(avg_input_tokens, "avg_input_tokens")
    aout = None if avg_output_tokens is None else _dec(avg_output_tokens, "avg_output_tokens")
    if basis is None:
        basis = "request" if ain is not None and aout else "output"
    if basis not in BASES:
        raise InvalidArgumentError(f"basis must be one of {', '.join(BASES)}, not {basis!r}")
    if basis == "request" and (ain is None or not aout):
        raise InvalidArgumentError("the request basis needs avg_input_tokens and avg_output_tokens")
    return BreakEven(
        self_hosted=self_hosted,
        price=_resolve_model(model, price_table),
        basis=basis,
        avg_input_tokens=ain,
        avg_output_tokens=aout,
    )


# --------------------------------------------------------------------------------------------
# Cost against volume, and its plot
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    """Monthly cost both ways at one daily volume.

    Attributes:
        volume: tokens a day of the break-even's basis (output tokens for ``request``), or
            requests a day when ``per_request``.
        api_monthly: the API bill a month.
        self_host_monthly: GPU cost a month for as many GPUs as the volume needs.
        gpus: GPUs needed (1 when the throughput is unknown).
    """

    volume: Decimal
    api_monthly: Decimal
    self_host_monthly: Decimal
    gpus: int


def cost_curve(
    be: BreakEven, volumes: Iterable[Number] | None = None, *, per_request: bool = False
) -> list[CurvePoint]:
    """Monthly API and self-hosted cost over a range of daily volumes.

    Args:
        be: from :func:`break_even`.
        volumes: daily volumes; default 0 to 3x the break-even in 60 steps.
        per_request: volumes are requests a day (needs the call's size) instead of tokens.
    """
    sh = be.self_hosted
    per_call: Decimal | None = None
    if per_request:
        per_call = be.avg_output_tokens if be.basis != "input" else be.avg_input_tokens
        if not per_call:
            raise InvalidArgumentError("per-request volumes need the tokens per call")
    if volumes is None:
        top = be.requests_per_day if per_request else be.tokens_per_day
        if top is None or not top.is_finite():
            raise InvalidArgumentError("no finite break-even: give the volumes to plot")
        volumes = [top * 3 * i / 60 for i in range(61)]
    points: list[CurvePoint] = []
    for v in volumes:
        volume = _dec(v, "volume")
        tokens = volume * per_call if per_call is not None else volume
        api_daily = tokens * be.api_per_mtok / _MILLION
        gpus = sh.gpus_for(tokens)
        points.append(
            CurvePoint(
                volume=volume,
                api_monthly=api_daily * sh.days_per_month,
                self_host_monthly=sh.monthly_cost * gpus,
                gpus=gpus,
            )
        )
    return points


def plot_cost_curve(
    be: BreakEven,
    path: str | os.PathLike[str] | None = None,
    *,
    per_request: bool | None = None,
    volumes: Iterable[Number] | None = None,
) -> Any:
    """Plot monthly cost against daily volume for the API and the GPU, the crossing marked.

    Needs matplotlib (``pip install 'smolgen[plot]'``). Returns the matplotlib Figure; writes it
    to ``path`` too when given.
    """
    from ...plots import pyplot

    plt = pyplot(None if path is None else os.fspath(path))
    if per_request is None:
        per_request = be.requests_per_day is not None
    points = cost_curve(be, volumes, per_request=per_request)
    xs = [float(p.volume) for p in points]
    fig, ax = plt.subplots(figsize=(8, 5))
    api_label = f"API: {be.price.name or be.price.model}"
    ax.plot(xs, [float(p.api_monthly) for p in points], label=api_label)
    label = f"self-hosted: {format_usd(be.self_hosted.gpu_hourly)}/h"
    if be.self_hosted.gpu:
        label += f" ({be.self_hosted.gpu})"
    ax.step(xs, [float(p.self_host_monthly) for p in points], where="post", label=label)
    crossing = be.requests_per_day if per_request else be.tokens_per_day
    if crossing is not None and crossing.is_finite() and crossing <= Decimal(str(max(xs))):
        x, y = float(crossing), float(be.self_hosted.monthly_cost)
        ax.axvline(x, linestyle="--", color="grey", linewidth=1)
        ax.plot([x], [y], marker="o", color="black")
        amount = f"{crossing:,.0f} requests" if per_request else f"{format_tokens(crossing)} tokens"
        ax.annotate(
            f"break-even: {amount}/day\n{format_usd(be.self_hosted.monthly_cost)}/month",
            xy=(x, y),
            xytext=(12, -36),
            textcoords="offset points",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )
    basis = "output" if be.basis == "request" else be.basis
    unit = "requests" if per_request else f"{basis} tokens"
    ax.set_xlabel(f"{unit} per day")
    ax.set_ylabel("$ per month")
    ax.set_title("Monthly cost against daily volume")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path))
    return fig
