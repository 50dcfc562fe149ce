"""``smolgen sweep``: the same prompt at several temperatures, several runs each.

The chapter's experiment: at T=0.3 the runs nearly repeat each other, at T=1.2 they drift apart.
"""

from __future__ import annotations

import argparse
import json

from ..errors import InvalidArgumentError
from . import add_sampling_arguments, model_argument, sampling_options


def _temperatures(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InvalidArgumentError(
            f"--temperatures takes numbers like 0.3,0.7,1.2: {text!r}"
        ) from None
    if not values:
        raise InvalidArgumentError("--temperatures needs at least one value")
    return values


def _mean_common_prefix(runs: list[list[int]]) -> float:
    """Mean, over pairs of runs, of how many leading tokens they share: high when the
    temperature makes every run say the same, near zero when each run goes its own way."""
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :]]
    if not pairs:
        return float(len(runs[0])) if runs else 0.0
    shared = []
    for a, b in pairs:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        shared.append(n)
    return sum(shared) / len(shared)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="generate at several temperatures to see what temperature does",
        description="Continue PROMPT several times at each temperature (seeds SEED, SEED+1, ...) "
        "and show how much the runs agree.",
    )
    p.add_argument("prompt")
    model_argument(p)
    p.add_argument("--temperatures", type=_temperatures, default=[0.3, 0.7, 1.2],
                   help="comma-separated (default: 0.3,0.7,1.2)")  # fmt: skip
    p.add_argument("--runs", type=int, default=3, help="runs per temperature (default: 3)")
    # Short runs, so the table stays readable; seeds SEED, SEED+1, ... per temperature.
    add_sampling_arguments(p, skip=("temperature",), max_tokens=20, seed=0)
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import load_model

    if args.runs < 1:
        raise InvalidArgumentError("--runs must be at least 1")
    model = load_model(args)
    results = []
    options = sampling_options(args)
    for t in args.temperatures:
        runs = [
            model.generate(args.prompt, **{**options, "temperature": t, "seed": args.seed + i})
            for i in range(args.runs)
        ]
        results.append({
            "temperature": t,
            "texts": [c.text for c in runs],
            "common_prefix_tokens": _mean_common_prefix([c.token_ids for c in runs]),
        })  # fmt: skip
    if args.json:
        print(json.dumps({"prompt": args.prompt, "results": results}, ensure_ascii=False))
        return 0
    table = Table(title=f"{args.prompt!r}, {args.max_tokens} tokens", title_justify="left")
    table.add_column("T", justify="right")
    table.add_column("run", justify="right")
    table.add_column("continuation")
    for r in results:
        for i, text in enumerate(r["texts"], 1):
            table.add_row(f"{r['temperature']:g}" if i == 1 else "", str(i), repr(text))
        agreement = f"runs agree on their first {r['common_prefix_tokens']:.1f} tokens on average"
        table.add_row("", "", agreement, end_section=True)
    Console(markup=False).print(table)
    return 0
