"""``smolgen peek``: the ranked next-token candidates, with probability bars and entropy."""

from __future__ import annotations

import argparse
import json

from . import model_argument

BAR_WIDTH = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "peek",
        help="show the likeliest next tokens and how sure the model is",
        description="Run PROMPT through the model once and rank the candidates for the next "
        "token: probability, log-probability, and the entropy of the whole distribution.",
    )
    p.add_argument("prompt", help="the text to continue")
    model_argument(p)
    p.add_argument("-k", "--top-k", type=int, default=5, help="candidates to show (default: 5)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .. import load

    result = load(args.model, device=args.device, dtype=args.dtype).peek(args.prompt, args.top_k)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    table = Table(title=f"next token after {args.prompt!r}", title_justify="left")
    for name, justify in (("#", "right"), ("id", "right"), ("token", "left"),
                          ("p", "right"), ("log p", "right"), ("", "left")):  # fmt: skip
        table.add_column(name, justify=justify)
    for rank, c in enumerate(result.candidates, 1):
        bar = "█" * max(1, round(c.probability * BAR_WIDTH)) if c.probability >= 0.005 else "▏"
        table.add_row(str(rank), str(c.id), repr(c.piece), f"{c.probability:.1%}",
                      f"{c.logprob:.3f}", bar)  # fmt: skip
    console = Console(markup=False)
    console.print(table)
    verdict = "flat: the model is unsure" if result.is_flat else "peaked"
    console.print(
        f"entropy {result.entropy_bits:.2f} bits, top-1 {result.top1_probability:.1%}, "
        f"margin to #2 {result.margin:.1%} ({verdict})"
    )
    return 0
