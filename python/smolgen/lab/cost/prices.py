"""What models and GPUs cost: the price table, with a source and an as-of date on every row.

The bundled table (:func:`default_prices`), or your own file in the same format or in LiteLLM's
``model_prices_and_context_window.json`` format when the bundled prices are out of date
(:func:`load_prices`).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import InvalidArgumentError
from .money import (
    _MILLION,
    Number,
    _dec,
    _num,
)


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
    text = (resources.files("smolgen.lab") / "data" / "prices.json").read_text("utf-8")
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
