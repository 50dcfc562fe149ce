"""What a workload costs through an API, what it costs on your own GPU, and where they cross.

Every figure is computed from inputs that are echoed back in the result, so a reader can check
the arithmetic and change any assumption. Money is ``decimal.Decimal`` throughout: the worked
example in the source texts (5,000 requests a day x 2,000 input + 500 output tokens at $2.50 /
$10.00 per 1M tokens) comes out at exactly $50.00 a day, $1,500.00 a month and $0.01 a request.

- :func:`estimate_monthly_cost`: an API workload's daily, monthly and per-request cost.
- :func:`self_host_cost`: a rented GPU's cost per 1M tokens, per day and per month.
- :func:`break_even`: the daily volume at which the GPU and the API cost the same.
- :func:`cost_curve` and :func:`plot_cost_curve`: monthly cost against daily volume, both ways.

Prices come from a data file with a source and an as-of date on every row (:func:`load_prices`);
load your own file, in the same format or in LiteLLM's
``model_prices_and_context_window.json`` format, when the bundled prices are out of date.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from smolgen.errors import InvalidArgumentError, ThroughputUnavailableError

__all__ = [
    "DEFAULT_DAYS_PER_MONTH",
    "ApiCostEstimate",
    "BreakEven",
    "CurvePoint",
    "GpuPrice",
    "ModelPrice",
    "PriceTable",
    "SelfHostEstimate",
    "ThroughputUnavailableError",
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


# --------------------------------------------------------------------------------------------
# Price table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPrice:
    """An API model's price.

    Attributes:
        model: the key used to look it up (``"gpt-4o"``).
        input_per_mtok: dollars per 1M input (prompt) tokens.
        output_per_mtok: dollars per 1M output (completion) tokens.
        provider: who sells it.
        name: a display name.
        context_window: tokens, when known.
        source: where the price was read.
        as_of: when (ISO date or year-month).
        tokenizer: the tiktoken encoding the model uses, when known.
    """

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    provider: str = ""
    name: str = ""
    context_window: int | None = None
    source: str = ""
    as_of: str = ""
    tokenizer: str | None = None

    @property
    def input_per_token(self) -> Decimal:
        """Dollars per input token."""
        return self.input_per_mtok / _MILLION

    @property
    def output_per_token(self) -> Decimal:
        """Dollars per output token."""
        return self.output_per_mtok / _MILLION

    def cost_of(self, input_tokens: Decimal, output_tokens: Decimal) -> Decimal:
        """Dollars for one call of ``input_tokens`` in and ``output_tokens`` out."""
        return (
            input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        ) / _MILLION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model": self.model,
            "name": self.name or self.model,
            "provider": self.provider,
            "input_per_mtok": _num(self.input_per_mtok),
            "output_per_mtok": _num(self.output_per_mtok),
            "context_window": self.context_window,
            "tokenizer": self.tokenizer,
            "source": self.source,
            "as_of": self.as_of,
        }


@dataclass(frozen=True)
class GpuPrice:
    """A rentable GPU's price, and its throughput when the source quotes one.

    Attributes:
        gpu: the key used to look it up (``"a100-80gb"``).
        hourly: dollars per hour.
        tokens_per_second: a quoted throughput, or None.
        name: a display name.
        note: what the throughput figure refers to.
        source: where the price was read.
        as_of: when.
    """

    gpu: str
    hourly: Decimal
    tokens_per_second: Decimal | None = None
    name: str = ""
    note: str = ""
    source: str = ""
    as_of: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "gpu": self.gpu,
            "name": self.name or self.gpu,
            "hourly": _num(self.hourly),
            "tokens_per_second": _num(self.tokens_per_second),
            "note": self.note,
            "source": self.source,
            "as_of": self.as_of,
        }


def _lookup(kind: str, key: str, table: Mapping[str, Any], names: Mapping[str, str]) -> Any:
    if key in table:
        return table[key]
    folded = key.strip().lower()
    for candidate in (folded, folded.replace(" ", "-"), names.get(folded, "")):
        if candidate in table:
            return table[candidate]
    if "/" in folded:  # "openai/gpt-4o"
        tail = folded.split("/", 1)[1]
        if tail in table:
            return table[tail]
    close = difflib.get_close_matches(folded, list(table), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InvalidArgumentError(f"unknown {kind} {key!r}{hint}")


@dataclass(frozen=True)
class PriceTable:
    """API model prices and GPU prices, keyed by lower-case name.

    Attributes:
        models: ``{model key: ModelPrice}``.
        gpus: ``{gpu key: GpuPrice}``.
        origin: where the table was read from.
    """

    models: dict[str, ModelPrice] = field(default_factory=dict)
    gpus: dict[str, GpuPrice] = field(default_factory=dict)
    origin: str = ""

    def model(self, name: str) -> ModelPrice:
        """Look up a model by key, display name (any case) or ``provider/model``."""
        names = {m.name.lower(): k for k, m in self.models.items() if m.name}
        return _lookup("model", name, self.models, names)

    def gpu(self, name: str) -> GpuPrice:
        """Look up a GPU by key or display name."""
        names = {g.name.lower(): k for k, g in self.gpus.items() if g.name}
        return _lookup("GPU", name, self.gpus, names)

    def merged(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s rows added (``other`` wins on a clash)."""
        return PriceTable(
            models={**self.models, **other.models},
            gpus={**self.gpus, **other.gpus},
            origin=f"{self.origin} + {other.origin}",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "origin": self.origin,
            "models": [m.to_dict() for m in self.models.values()],
            "gpus": [g.to_dict() for g in self.gpus.values()],
        }


def _parse_smolgen_prices(doc: Mapping[str, Any], origin: str) -> PriceTable:
    models: dict[str, ModelPrice] = {}
    for row in doc.get("models", []):
        key = str(row["model"]).lower()
        models[key] = ModelPrice(
            model=key,
            input_per_mtok=_dec(row["input"], f"{key}: input"),
            output_per_mtok=_dec(row["output"], f"{key}: output"),
            provider=str(row.get("provider", "")),
            name=str(row.get("name", "")),
            context_window=int(row["context_window"]) if row.get("context_window") else None,
            source=str(row.get("source", "")),
            as_of=str(row.get("as_of", "")),
            tokenizer=row.get("tokenizer"),
        )
    gpus: dict[str, GpuPrice] = {}
    for row in doc.get("gpus", []):
        key = str(row["gpu"]).lower()
        tps = row.get("tokens_per_second")
        gpus[key] = GpuPrice(
            gpu=key,
            hourly=_dec(row["hourly"], f"{key}: hourly", positive=True),
            tokens_per_second=_dec(tps, f"{key}: tokens_per_second") if tps else None,
            name=str(row.get("name", "")),
            note=str(row.get("throughput_note", "")),
            source=str(row.get("source", "")),
            as_of=str(row.get("as_of", "")),
        )
    return PriceTable(models=models, gpus=gpus, origin=origin)


def _parse_litellm_prices(doc: Mapping[str, Any], origin: str, as_of: str) -> PriceTable:
    """LiteLLM's ``model_prices_and_context_window.json``: dollars per token, one key a model."""
    models: dict[str, ModelPrice] = {}
    for key, row in doc.items():
        if key == "sample_spec" or not isinstance(row, Mapping):
            continue
        cin, cout = row.get("input_cost_per_token"), row.get("output_cost_per_token")
        if cin is None or cout is None:
            continue  # image, audio or embedding models priced in other units
        try:
            per_in = _dec(cin, f"{key}: input_cost_per_token") * _MILLION
            per_out = _dec(cout, f"{key}: output_cost_per_token") * _MILLION
        except ValueError:
            continue
        window = row.get("max_input_tokens") or row.get("max_tokens")
        models[key.lower()] = ModelPrice(
            model=key.lower(),
            input_per_mtok=per_in.normalize(),
            output_per_mtok=per_out.normalize(),
            provider=str(row.get("litellm_provider", "")),
            context_window=int(window) if isinstance(window, (int, float)) else None,
            source=origin,
            as_of=as_of,
        )
    return PriceTable(models=models, origin=origin)


def load_prices(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """Read a price table.

    Args:
        path: a JSON file in smolgen's format (``{"models": [...], "gpus": [...]}``) or in
            LiteLLM's ``model_prices_and_context_window.json`` format; None for the bundled table.

    Raises:
        InvalidArgumentError: the file is missing or is in neither format.
    """
    if path is None:
        return default_prices()
    p = Path(path).expanduser()
    try:
        doc = json.loads(p.read_text("utf-8"))
    except OSError as exc:
        raise InvalidArgumentError(f"{p}: cannot read price file ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{p}: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"{p}: expected a JSON object")
    try:
        if isinstance(doc.get("models"), list) or isinstance(doc.get("gpus"), list):
            return _parse_smolgen_prices(doc, str(p))
        if any(
            isinstance(v, dict) and "input_cost_per_token" in v for v in doc.values()
        ) or isinstance(doc.get("sample_spec"), dict):
            mtime = _dt.date.fromtimestamp(p.stat().st_mtime).isoformat()
            return _parse_litellm_prices(doc, f"LiteLLM prices ({p.name})", mtime)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{p}: malformed price row ({exc})") from exc
    raise InvalidArgumentError(
        f"{p}: neither smolgen's price format nor LiteLLM's model_prices_and_context_window.json"
    )


@lru_cache(maxsize=1)
def default_prices() -> PriceTable:
    """The bundled price table (each row has its source and as-of date)."""
    text = (resources.files("smolgen") / "data" / "prices.json").read_text("utf-8")
    return _parse_smolgen_prices(json.loads(text), "smolgen bundled prices")


ModelSpec = str | ModelPrice | Sequence[Number]


def _resolve_model(model: ModelSpec, price_table: PriceTable | None) -> ModelPrice:
    if isinstance(model, ModelPrice):
        return model
    if isinstance(model, str):
        return (price_table or default_prices()).model(model)
    if isinstance(model, Sequence) and len(model) == 2:
        pin, pout = model
        return ModelPrice(
            model="custom",
            input_per_mtok=_dec(pin, "input price per 1M tokens"),
            output_per_mtok=_dec(pout, "output price per 1M tokens"),
            source="given",
        )
    raise InvalidArgumentError(
        "model must be a model name, a ModelPrice or (input $/1M, output $/1M)"
    )


# --------------------------------------------------------------------------------------------
# API cost
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Self-hosting
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Break-even
# --------------------------------------------------------------------------------------------

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
    from .plots import pyplot

    plt = pyplot(path)
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
