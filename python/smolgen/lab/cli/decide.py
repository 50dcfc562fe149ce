"""``smolgen decide``: API or self-host, with the path taken and the arithmetic behind it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cost import add_gpu_time_arguments, number_argument

DESCRIPTION = """\
Walk the API-or-self-host decision tree and print the recommendation, the path taken (each
question, the answer, why), the follow-up checklist, the two-of-three rule of thumb and, when the
volume, token counts and prices are given, the break-even from the cost model. It also lists the
single changes of input that would flip the verdict.

Run in a terminal without flags, it asks the questions it needs. With flags (for scripts), an
answer not given counts as "no"."""

EPILOG = """\
examples:
  smolgen decide
  smolgen decide --no-pii --calls-per-day 5000 --general
  smolgen decide --calls-per-day 5000 --model gpt-4o --input-tokens 2000 --output-tokens 500 \\
      --gpu a100-80gb --json"""

# The flags that answer questions: any of them switches off the interactive questions.
_ANSWER_FLAGS = (
    "pii_must_stay",
    "calls_per_day",
    "latency_budget_ms",
    "narrow_domain",
    "has_training_data",
    "general_tasks",
    "api_model",
    "avg_input_tokens",
    "avg_output_tokens",
    "gpu",
    "gpu_hourly",
    "tokens_per_second",
)


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _number(text: str) -> float:
    """A finite number >= 0, as the float :class:`smolgen.lab.decide.DecisionInputs` holds."""
    return float(number_argument(text))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``decide`` command."""
    p = subparsers.add_parser(
        "decide",
        help="API or self-host? a recommendation with its path and its arithmetic",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q = p.add_argument_group("the questions")
    q.add_argument(
        "--pii",
        dest="pii_must_stay",
        action=argparse.BooleanOptionalAction,
        help="the data includes PII that must not leave your network",
    )
    q.add_argument("--calls-per-day", type=_positive_int, metavar="N", help="calls a day")
    q.add_argument(
        "--latency-ms",
        dest="latency_budget_ms",
        type=_number,
        metavar="MS",
        help="latency budget per call in ms (100 or less counts as a 100 ms budget)",
    )
    q.add_argument(
        "--narrow-domain",
        action=argparse.BooleanOptionalAction,
        help="the task is a narrow, well-defined domain",
    )
    q.add_argument(
        "--training-data",
        dest="has_training_data",
        action=argparse.BooleanOptionalAction,
        help="you have training data for that domain",
    )
    q.add_argument(
        "--general",
        dest="general_tasks",
        action=argparse.BooleanOptionalAction,
        help="the task needs general reasoning, code or many languages",
    )
    c = p.add_argument_group("the arithmetic (optional: gives the break-even)")
    c.add_argument("--model", dest="api_model", metavar="MODEL", help="API model, e.g. gpt-4o")
    c.add_argument(
        "--input-tokens",
        dest="avg_input_tokens",
        type=_positive_int,
        metavar="N",
        help="average input tokens per call",
    )
    c.add_argument(
        "--output-tokens",
        dest="avg_output_tokens",
        type=_positive_int,
        metavar="N",
        help="average output tokens per call",
    )
    c.add_argument("--gpu", metavar="NAME", help="a GPU from the price table, e.g. a100-80gb")
    c.add_argument("--gpu-hourly", type=_number, metavar="USD", help="GPU price, $ per hour")
    c.add_argument(
        "--tokens-per-second", type=_number, metavar="N", help="GPU throughput in tokens/s"
    )
    add_gpu_time_arguments(c, _number)
    c.add_argument("--prices", type=Path, metavar="FILE", help="a price file of your own")
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="ask for the answers not given as flags (default in a terminal without flags)",
    )
    p.add_argument("--no-flips", action="store_true", help="skip the what-would-flip-it analysis")
    p.add_argument("--json", action="store_true", help="print JSON to standard output")
    p.set_defaults(func=run)


def _make_asker(stream: Any | None) -> Any:
    """A question-asker on standard error (standard output stays clean for --json)."""
    from rich.console import Console
    from rich.prompt import Confirm, FloatPrompt, IntPrompt, Prompt

    console = Console(stderr=True)

    def ask(spec: Any) -> Any:
        if spec.type == "bool":
            return Confirm.ask(spec.prompt, console=console, stream=stream)
        if spec.optional:
            while True:
                raw = Prompt.ask(
                    spec.prompt, console=console, default="", show_default=False, stream=stream
                )
                raw = raw.strip().replace(",", "")
                if not raw:
                    return None
                try:
                    if spec.type == "int":
                        return int(raw)
                    return float(raw) if spec.type == "number" else raw
                except ValueError:
                    console.print("[prompt.invalid]Please enter a number, or leave it blank")
        if spec.type == "int":
            return IntPrompt.ask(spec.prompt, console=console, stream=stream)
        if spec.type == "number":
            return FloatPrompt.ask(spec.prompt, console=console, stream=stream)
        return Prompt.ask(spec.prompt, console=console, stream=stream)

    return ask


def run(args: argparse.Namespace) -> int:
    """Run ``smolgen decide``."""
    from smolgen.lab.cost import load_prices
    from smolgen.lab.decide import DecisionInputs, decide, gather_inputs

    table = load_prices(args.prices) if args.prices is not None else None
    given = {name: getattr(args, name) for name in _ANSWER_FLAGS if getattr(args, name) is not None}
    settings = {"utilisation": args.utilisation, "hours_per_day": args.hours_per_day}
    interactive = args.interactive or (not given and sys.stdin.isatty())
    if interactive:
        stream = None if sys.stdin.isatty() else sys.stdin
        inputs = gather_inputs(_make_asker(stream), {**given, **settings}, price_table=table)
    else:
        inputs = DecisionInputs(**given, **settings)
    decision = decide(inputs, price_table=table, flips=not args.no_flips)
    if args.json:
        print(json.dumps(decision.to_dict(), ensure_ascii=False, indent=2))
        return 0
    _print_decision(decision)
    return 0


def _print_decision(d: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    from smolgen.lab.cost import format_tokens, format_usd

    console = Console()
    style = {"self_host": "green", "consider_self_host": "yellow", "api": "cyan"}[d.verdict]
    console.print(Panel(f"[bold]{escape(d.title)}[/bold]", border_style=style, expand=False))

    path = Table(title="Path taken", title_justify="left")
    path.add_column("#", justify="right")
    path.add_column("question")
    path.add_column("answer")
    path.add_column("why")
    for i, step in enumerate(d.path, 1):
        answer = "yes" if step.answer else "no"
        if not step.given:
            answer += " (not given)"
        path.add_row(str(i), escape(step.question), answer, escape(step.why))
    console.print(path)

    thumb = d.rule_of_thumb
    n = len(thumb.factors)
    console.print(
        f"[bold]Rule of thumb[/bold] ({thumb.need} of {n} make self-hosting right): "
        f"{thumb.count} of {n} hold"
    )
    for _, text, holds in thumb.factors:
        mark = "[green]✓" if holds else "[dim]·"
        console.print(f"  {mark} {escape(text)}[/]")

    be = d.break_even
    if be is not None and d.api_cost is not None:
        req = be.requests_per_day
        console.print(
            f"[bold]Arithmetic:[/bold] {escape(d.api_cost.price.name or d.api_cost.model)} costs "
            f"{format_usd(d.api_cost.monthly_cost)} a month at "
            f"{format_tokens(d.api_cost.requests_per_day)} calls a day; the GPU costs "
            f"{format_usd(be.self_hosted.monthly_cost)} a month; break-even at "
            + (f"{req:,.0f} calls a day" if req is not None else "-")
            + f" ({format_tokens(be.tokens_per_day)} output tokens a day)."
        )

    console.print("[bold]Next steps[/bold]")
    for item in d.checklist:
        console.print(f"  • {escape(item)}")
    for note in d.notes:
        console.print(f"[yellow]Note:[/yellow] {escape(note)}")
    if d.flips:
        console.print("[bold]What single change would flip this[/bold]")
        for flip in d.flips:
            console.print(f"  • {escape(flip.describe())}")
    if d.pitfalls:
        console.print("[bold]Pitfalls[/bold]")
        for item in d.pitfalls:
            console.print(f"  • {escape(item)}")
