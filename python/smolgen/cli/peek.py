"""``smolgen peek``: the ranked next-token candidates, with probability bars and entropy."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from . import add_sampling_arguments, model_argument, sampling_options

if TYPE_CHECKING:
    from rich.console import JustifyMethod

BAR_WIDTH = 30
# The settings that reshape the distribution (top-k is taken: -k is how many candidates to show).
SHAPING = ("temperature", "top_p", "min_p")


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
    sampling = p.add_argument_group(
        "sampling", "also show the distribution the sampler would draw from with these settings"
    )
    add_sampling_arguments(sampling, only=SHAPING)
    p.add_argument("--plot", metavar="FILE.png",
                   help="save a chart of the distribution before and after the sampling "
                   "settings (needs matplotlib)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import load_model, require_extra

    if args.plot:
        require_extra("--plot", "plot", "matplotlib")
    model = load_model(args)
    result = model.peek(args.prompt, args.top_k)
    shaped = bool(sampling_options(args))
    after = sampled_distribution(model, args) if shaped or args.plot else {}
    if args.plot:
        save_plot(model, args, after)
    if args.json:
        record = result.to_dict()
        if shaped:
            for c in record["candidates"]:
                c["sampled_probability"] = after.get(c["id"], 0.0)
        print(json.dumps(record, ensure_ascii=False))
        return 0
    table = Table(title=f"next token after {args.prompt!r}", title_justify="left")
    columns: list[tuple[str, JustifyMethod]] = [
        ("#", "right"), ("id", "right"), ("token", "left"), ("p", "right"),
        ("log p", "right"), ("", "left"),
    ]  # fmt: skip
    if shaped:
        columns.append((settings_label(args), "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for rank, c in enumerate(result.candidates, 1):
        bar = "█" * max(1, round(c.probability * BAR_WIDTH)) if c.probability >= 0.005 else "▏"
        row = [str(rank), str(c.id), repr(c.piece), f"{c.probability:.1%}", f"{c.logprob:.3f}", bar]
        if shaped:
            row.append(f"{after.get(c.id, 0.0):.1%}")
        table.add_row(*row)
    console = Console(markup=False)
    console.print(table)
    verdict = "flat: the model is unsure" if result.is_flat else "peaked"
    console.print(
        f"entropy {result.entropy_bits:.2f} bits, top-1 {result.top1_probability:.1%}, "
        f"margin to #2 {result.margin:.1%} ({verdict})"
    )
    if shaped:
        console.print(f"{settings_label(args)} keeps {len(after)} candidate tokens")
    if args.plot:
        console.print(f"plot saved to {args.plot}")
    return 0


def settings_label(args: argparse.Namespace) -> str:
    options = sampling_options(args)
    parts = [f"T={options.get('temperature', 1):g}"]
    parts += [
        f"{name.replace('_', '-')} {options[name]:g}" for name in SHAPING[1:] if name in options
    ]
    return ", ".join(parts)


def sampled_distribution(model, args: argparse.Namespace) -> dict[int, float]:
    """What the sampler would draw from after the prompt with these settings: id -> p."""
    from .. import _core

    logits = model.logits(args.prompt)
    pairs = _core.sampler_distribution(logits, **sampling_options(args))
    return dict(pairs)


def save_plot(model, args: argparse.Namespace, after: dict[int, float]) -> None:
    import numpy as np

    from ..plots import plot_distribution

    wide = model.peek(args.prompt, max(args.top_k, 15))
    ids = [c.id for c in wide.candidates]
    plot_distribution(
        [c.piece for c in wide.candidates],
        np.array([c.probability for c in wide.candidates]),
        np.array([after.get(i, 0.0) for i in ids]),
        f"next token after {args.prompt!r}",
        settings_label(args),
        args.plot,
    )
