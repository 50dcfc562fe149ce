"""What an offline batch job costs on your own machines, and on an API: how many node-hours
the job takes at the throughput one node reaches on it, how many nodes finish it by a deadline,
and what the same tokens cost through API models.

The throughput is the job's own: completion tokens per second of wall time on one node, prompts
included, as ``smolgen batch --json`` reports it (``completion_tokens_per_s``) for a sample of
the job. A node is paid for the time it runs the job, so the cost is node-hours x $/h whatever
the number of nodes; more nodes only shorten the wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from ...errors import InvalidArgumentError
from .money import _MILLION, _SECONDS_PER_HOUR, Number, _dec, _num
from .prices import ModelPrice, PriceTable, _resolve_model


@dataclass(frozen=True)
class ApiComparison:
    """The same job's tokens through an API model, at its list prices."""

    model: str
    cost: Decimal
    #: API cost / self-hosted cost (above 1: the job is cheaper on your nodes).
    times_self_hosted: Decimal | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cost_usd": _num(self.cost),
            "times_self_hosted": _num(self.times_self_hosted),
        }


@dataclass(frozen=True)
class BatchJobEstimate:
    """A batch job's size, time and cost, with every input echoed."""

    requests: Decimal
    input_tokens: Decimal
    output_tokens: Decimal
    tokens_per_second: Decimal
    node_hourly: Decimal
    deadline_hours: Decimal
    vs: tuple[ApiComparison, ...] = field(default=())

    @property
    def completion_tokens(self) -> Decimal:
        return self.requests * self.output_tokens

    @property
    def node_hours(self) -> Decimal:
        """Hours one node would take for the whole job."""
        return self.completion_tokens / self.tokens_per_second / _SECONDS_PER_HOUR

    @property
    def nodes(self) -> int:
        """Nodes that finish the job within the deadline (at least one)."""
        return max(1, math.ceil(self.node_hours / self.deadline_hours))

    @property
    def wall_hours(self) -> Decimal:
        """The job's wall time on :attr:`nodes` nodes."""
        return self.node_hours / self.nodes

    @property
    def cost(self) -> Decimal:
        return self.node_hours * self.node_hourly

    @property
    def cost_per_mtok(self) -> Decimal:
        """Dollars per 1M completion tokens on your nodes."""
        return self.node_hourly / (self.tokens_per_second * _SECONDS_PER_HOUR) * _MILLION

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": _num(self.requests),
            "input_tokens": _num(self.input_tokens),
            "output_tokens": _num(self.output_tokens),
            "tokens_per_second": _num(self.tokens_per_second),
            "node_hourly_usd": _num(self.node_hourly),
            "deadline_hours": _num(self.deadline_hours),
            "completion_tokens": _num(self.completion_tokens),
            "node_hours": _num(self.node_hours),
            "nodes": self.nodes,
            "wall_hours": _num(self.wall_hours),
            "cost_usd": _num(self.cost),
            "cost_per_mtok_usd": _num(self.cost_per_mtok),
            "vs": [c.to_dict() for c in self.vs],
        }


def batch_job_cost(
    requests: Number,
    input_tokens: Number,
    output_tokens: Number,
    tokens_per_second: Number,
    node_hourly: Number,
    *,
    deadline_hours: Number = 24,
    vs: tuple[str | ModelPrice, ...] = (),
    price_table: PriceTable | None = None,
) -> BatchJobEstimate:
    """A job of ``requests`` requests of ``input_tokens`` in and ``output_tokens`` out (on
    average) on nodes that generate ``tokens_per_second`` completion tokens a second each and
    cost ``node_hourly`` dollars an hour, to finish within ``deadline_hours``; compared with
    the API models ``vs``.

    One million requests of 40 tokens out at 600 tokens/s take 18.5 node-hours: one node
    finishes in a day, for $1.85 at $0.10 an hour.
    """
    job = BatchJobEstimate(
        requests=_dec(requests, "requests"),
        input_tokens=_dec(input_tokens, "input_tokens"),
        output_tokens=_dec(output_tokens, "output_tokens"),
        tokens_per_second=_dec(tokens_per_second, "tokens_per_second", positive=True),
        node_hourly=_dec(node_hourly, "node_hourly"),
        deadline_hours=_dec(deadline_hours, "deadline_hours", positive=True),
    )
    if job.completion_tokens == 0:
        raise InvalidArgumentError("a batch job needs requests and output tokens above 0")
    comparisons = []
    for model in vs:
        price = _resolve_model(model, price_table)
        api = job.requests * price.cost_of(job.input_tokens, job.output_tokens)
        ratio = api / job.cost if job.cost > 0 else None
        comparisons.append(ApiComparison(price.model, api, ratio))
    return replace(job, vs=tuple(comparisons))
