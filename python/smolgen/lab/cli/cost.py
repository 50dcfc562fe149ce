"""``smolgen cost``: API cost, self-hosted cost and the break-even between them."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from smolgen.errors import InvalidArgumentError
from smolgen.lab.cost import DEFAULT_DAYS_PER_MONTH

DESCRIPTION = """\
Work out what a workload costs, computed from numbers you can see and change:

  api        daily, monthly and per-request cost of an API workload
  self-host  a rented GPU's cost per 1M tokens and per month, and its break-even against API
             models in tokens and requests a day
  batch      an offline job on your own nodes: node-hours, nodes for a deadline, cost, and the
             same tokens through API models
  prices     the price table in use (each row with its source and as-of date)

Prices come from smolgen's bundled table; --prices FILE loads your own (smolgen's format, or
LiteLLM's model_prices_and_context_window.json)."""

API_EPILOG = """\
example (the worked example: $50.00 a day, $1,500.00 a month, $0.01 a request):
  smolgen cost api --requests-per-day 5000 --input-tokens 2000 --output-tokens 500 --model gpt-4o"""

SELF_HOST_EPILOG = """\
The cost per 1M tokens is $/h / (tokens/s x 3600 x utilisation) x 1M. The GPU costs $/h x hours
paid a day whatever the traffic, so the break-even volume is daily GPU cost / API $ per token.

examples:
  smolgen cost self-host --gpu-hourly 1.99 --tokens-per-second 200 --vs gpt-4o --basis output
  smolgen cost self-host --gpu a100-80gb --vs gpt-4o --vs gpt-4o-mini \\
      --requests-per-day 5000 --input-tokens 2000 --output-tokens 500
  smolgen cost self-host --gpu-hourly 0.40 --vs gpt-4o-mini --plot cost.png"""


BATCH_EPILOG = """\
The node-hours are completion tokens / (tokens/s x 3600); the cost is node-hours x $/h, whatever
the number of nodes (more nodes only finish sooner).

examples:
  smolgen batch sample.jsonl answers.jsonl --json > summary.json
  smolgen cost batch --requests 1000000 --from-summary summary.json --node-hourly 0.10 \\
      --vs gpt-4o-mini
  smolgen cost batch --requests 1e6 --input-tokens 80 --output-tokens 40 \\
      --tokens-per-second 600 --node-hourly 0.10 --hours 4"""


def number_argument(text: str) -> Decimal:
    """An argparse type: a finite number >= 0, with ``,`` or ``_`` allowed as separators."""
    try:
        value = Decimal(text.replace(",", "").replace("_", ""))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def add_gpu_time_arguments(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    number: Callable[[str], Any] = number_argument,
) -> None:
    """``--utilisation`` and ``--hours-per-day``: how much of the paid GPU time is used."""
    p.add_argument(
        "--utilisation",
        "--utilization",
        type=number,
        default="1",
        metavar="SHARE",
        help="share of paid GPU hours spent generating, 0-1 (default: 1)",
    )
    p.add_argument(
        "--hours-per-day",
        type=number,
        default="24",
        metavar="H",
        help="GPU hours paid each day (default: 24)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--days-per-month",
        type=number_argument,
        default=str(DEFAULT_DAYS_PER_MONTH),
        metavar="N",
        help=f"days in the monthly figures (default: {DEFAULT_DAYS_PER_MONTH})",
    )
    p.add_argument(
        "--prices", type=Path, metavar="FILE", help="a price file to use instead of smolgen's"
    )
    p.add_argument("--json", action="store_true", help="print JSON to standard output")


def _add_workload(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "-r",
        "--requests-per-day",
        type=number_argument,
        required=required,
        metavar="N",
        help="calls a day",
    )
    p.add_argument(
        "--input-tokens",
        type=number_argument,
        required=required,
        metavar="N",
        help="average input (prompt) tokens per call, history and system prompt included",
    )
    p.add_argument(
        "--output-tokens",
        type=number_argument,
        required=required,
        metavar="N",
        help="average output (completion) tokens per call",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cost`` command and its ``api``, ``self-host`` and ``prices`` subcommands."""
    p = subparsers.add_parser(
        "cost",
        help="API cost, self-hosted cost and the break-even between them",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda _args: _usage(p))
    sub = p.add_subparsers(dest="cost_command", metavar="{api,self-host,batch,prices}")

    api = sub.add_parser(
        "api",
        help="daily, monthly and per-request cost of an API workload",
        description="Daily, monthly and per-request cost of an API workload.",
        epilog=API_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_workload(api, required=True)
    api.add_argument(
        "-m",
        "--model",
        action="append",
        metavar="MODEL",
        help="a model from the price table (repeatable; default: gpt-4o)",
    )
    api.add_argument(
        "--input-price",
        type=number_argument,
        metavar="USD",
        help="$ per 1M input tokens (own price)",
    )
    api.add_argument(
        "--output-price",
        type=number_argument,
        metavar="USD",
        help="$ per 1M output tokens (own price)",
    )
    _add_common(api)
    api.set_defaults(func=run_api)

    sh = sub.add_parser(
        "self-host",
        help="a GPU's cost per 1M tokens and its break-even against API models",
        description="A rented GPU's cost per 1M tokens, per day and per month, and the daily "
        "volume at which it costs the same as an API model.",
        epilog=SELF_HOST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sh.add_argument("--gpu", metavar="NAME", help="a GPU from the price table, e.g. a100-80gb")
    sh.add_argument(
        "--gpu-hourly", type=number_argument, metavar="USD", help="GPU price, $ per hour"
    )
    tps = sh.add_mutually_exclusive_group()
    tps.add_argument(
        "--tokens-per-second",
        type=number_argument,
        metavar="N",
        help="generation throughput while busy (default: the price table's, if it quotes one)",
    )
    tps.add_argument(
        "--measure",
        action="store_true",
        help="measure the throughput on this machine with smolgen's benchmark",
    )
    add_gpu_time_arguments(sh)
    sh.add_argument(
        "--vs",
        action="append",
        metavar="MODEL",
        help="API model to break even against (repeatable)",
    )
    sh.add_argument(
        "--basis",
        choices=("output", "input", "request"),
        help="what the API charges are counted on: output tokens only, input tokens only, or "
        "whole requests (default: request when token counts are given, else output)",
    )
    _add_workload(sh, required=False)
    sh.add_argument("--plot", type=Path, metavar="FILE", help="save a cost-vs-volume plot (PNG)")
    _add_common(sh)
    sh.set_defaults(func=run_self_host)

    bj = sub.add_parser(
        "batch",
        help="an offline batch job on your own nodes, against API models",
        description="An offline batch job on your own nodes: the node-hours it takes at the "
        "throughput one node reaches on it, the nodes that finish it by a deadline, its cost, "
        "and what the same tokens cost through API models.",
        epilog=BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bj.add_argument(
        "--requests", type=number_argument, required=True, metavar="N", help="requests in the job"
    )
    bj.add_argument(
        "--from-summary",
        type=Path,
        metavar="FILE",
        help="a 'smolgen batch --json' summary of a sample of the job: its tokens per request "
        "and completion tokens/s (flags given as well win)",
    )
    bj.add_argument("--input-tokens", type=number_argument, metavar="N", help="per request")
    bj.add_argument("--output-tokens", type=number_argument, metavar="N", help="per request")
    bj.add_argument(
        "--tokens-per-second",
        type=number_argument,
        metavar="N",
        help="completion tokens/s one node reaches on the job, prompts included",
    )
    bj.add_argument(
        "--node-hourly", type=number_argument, required=True, metavar="USD", help="$ per node-hour"
    )
    bj.add_argument(
        "--hours", type=number_argument, default="24", metavar="H", help="deadline (default: 24)"
    )
    bj.add_argument(
        "--vs", action="append", metavar="MODEL", help="API model to compare (repeatable)"
    )
    bj.add_argument("--prices", type=Path, metavar="FILE", help="a price file to use instead")
    bj.add_argument("--json", action="store_true", help="print JSON to standard output")
    bj.set_defaults(func=run_batch)

    pr = sub.add_parser(
        "prices",
        help="show the price table",
        description="Show the API and GPU prices in use, with their sources and as-of dates.",
    )
    pr.add_argument("--prices", type=Path, metavar="FILE", help="a price file to show instead")
    pr.add_argument("--json", action="store_true", help="print JSON to standard output")
    pr.set_defaults(func=run_prices)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _table(args: argparse.Namespace) -> Any:
    from smolgen.lab.cost import load_prices

    return load_prices(args.prices)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, ensure_ascii=False, indent=2))


# --------------------------------------------------------------------------------------------
# cost api
# --------------------------------------------------------------------------------------------


def run_api(args: argparse.Namespace) -> int:
    """Run ``smolgen cost api``."""
    from smolgen.lab.cost import estimate_monthly_cost

    table = _table(args)
    if (args.input_price is None) != (args.output_price is None):
        raise InvalidArgumentError("give both --input-price and --output-price, or neither")
    models: list[Any] = list(args.model or [])
    if args.input_price is not None:
        models.append((args.input_price, args.output_price))
    if not models:
        models = ["gpt-4o"]
    estimates = [
        estimate_monthly_cost(
            args.requests_per_day,
            args.input_tokens,
            args.output_tokens,
            m,
            price_table=table,
            days_per_month=args.days_per_month,
        )
        for m in models
    ]
    if args.json:
        _print_json({"estimates": [e.to_dict() for e in estimates]})
        return 0

    from rich.console import Console
    from rich.table import Table

    from smolgen.lab.cost import format_tokens, format_usd

    console = Console(markup=False)  # names and sources are shown as written
    e0 = estimates[0]
    console.print(
        f"{format_tokens(e0.requests_per_day)} requests a day x "
        f"({format_tokens(e0.avg_input_tokens)} in + {format_tokens(e0.avg_output_tokens)} out "
        f"tokens); a month is {e0.days_per_month:g} days"
    )
    t = Table(title="API cost", title_justify="left")
    t.add_column("model", no_wrap=True)
    for col in ("in $/1M", "out $/1M", "per call", "per day", "per month"):
        t.add_column(col, justify="right")
    t.add_column("as of")
    for e in estimates:
        t.add_row(
            e.price.name or e.model,
            format_usd(e.price.input_per_mtok),
            format_usd(e.price.output_per_mtok),
            format_usd(e.cost_per_request),
            format_usd(e.daily_cost),
            format_usd(e.monthly_cost),
            e.price.as_of or "-",
        )
    console.print(t)
    return 0


# --------------------------------------------------------------------------------------------
# cost self-host
# --------------------------------------------------------------------------------------------


def run_self_host(args: argparse.Namespace) -> int:
    """Run ``smolgen cost self-host``."""
    from smolgen.lab.cost import break_even, estimate_monthly_cost, plot_cost_curve, self_host_cost

    table = _table(args)
    if args.gpu is None and args.gpu_hourly is None:
        raise InvalidArgumentError("give --gpu-hourly, or --gpu NAME from the price table")
    if args.requests_per_day is not None and None in (args.input_tokens, args.output_tokens):
        raise InvalidArgumentError("--requests-per-day needs --input-tokens and --output-tokens")
    hosted = self_host_cost(
        args.gpu_hourly,
        args.tokens_per_second,
        gpu=args.gpu,
        utilisation=args.utilisation,
        hours_per_day=args.hours_per_day,
        days_per_month=args.days_per_month,
        measure=args.measure,
        price_table=table,
    )
    evens = [
        break_even(
            hosted,
            model,
            basis=args.basis,
            avg_input_tokens=args.input_tokens,
            avg_output_tokens=args.output_tokens,
            price_table=table,
        )
        for model in (args.vs or [])
    ]
    at_volume = []
    if args.requests_per_day is not None:
        at_volume = [
            estimate_monthly_cost(
                args.requests_per_day,
                args.input_tokens,
                args.output_tokens,
                be.price,
                days_per_month=args.days_per_month,
            )
            for be in evens
        ]
    plot_path = None
    if args.plot is not None:
        if not evens:
            raise InvalidArgumentError("--plot needs an API model to compare with (--vs)")
        try:
            plot_cost_curve(evens[0], args.plot)
        except ImportError as exc:  # matplotlib is an optional extra
            raise InvalidArgumentError(str(exc)) from exc
        plot_path = str(args.plot)

    if args.json:
        _print_json(
            {
                "self_hosted": hosted.to_dict(),
                "break_even": [be.to_dict() for be in evens],
                "api_at_volume": [e.to_dict() for e in at_volume],
                "plot": plot_path,
            }
        )
        return 0
    _print_self_host(hosted, evens, at_volume, plot_path)
    return 0


def _print_self_host(hosted: Any, evens: list[Any], at_volume: list[Any], plot: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from smolgen.lab.cost import format_tokens, format_usd

    console = Console(markup=False)  # names and sources are shown as written
    tps = hosted.tokens_per_second
    t = Table(title="Self-hosted", title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    price = f"{format_usd(hosted.gpu_hourly)}/h"
    t.add_row("GPU", f"{hosted.gpu} at {price}" if hosted.gpu else price)
    t.add_row(
        "throughput",
        f"{tps:,f} tokens/s ({hosted.throughput_source})" if tps is not None else "not given",
    )
    t.add_row("utilisation", f"{float(hosted.utilisation):.0%} of paid hours")
    t.add_row("hours paid", f"{float(hosted.hours_per_day):g} h a day")
    if hosted.cost_per_mtok is not None:
        t.add_row("cost per 1M tokens", format_usd(hosted.cost_per_mtok))
        t.add_row("capacity", f"{format_tokens(hosted.capacity_tokens_per_day)} tokens a day")
    t.add_row("per day", format_usd(hosted.daily_cost))
    t.add_row(f"per month ({float(hosted.days_per_month):g} days)", format_usd(hosted.monthly_cost))
    console.print(t)
    if not evens:
        console.print("Add --vs MODEL for the break-even against an API model.")
        return

    b = Table(title="Break-even", title_justify="left")
    for col in (
        "API model",
        "basis",
        "API $/1M",
        "tokens/day",
        "requests/day",
        "GPU busy",
        "reachable",
    ):
        b.add_column(col, justify="left" if col in ("API model", "basis") else "right")
    for be in evens:
        req = be.requests_per_day
        util = be.utilisation_needed
        feasible = be.feasible
        b.add_row(
            be.price.name or be.price.model,
            "requests" if be.basis == "request" else f"{be.basis} tokens",
            format_usd(be.api_per_mtok),
            format_tokens(be.tokens_per_day),
            f"{req:,.0f}" if req is not None else "-",
            f"{float(util):.1%}" if util is not None else "-",
            {True: "yes", False: "no", None: f">= {be.min_tokens_per_second:,.0f} tok/s"}[feasible],
        )
    console.print(b)
    if evens[0].basis == "request":
        console.print(
            "basis 'requests': each request's input and output price folded into a price per "
            "output token, since the GPU's throughput counts output tokens."
        )
    # at_volume is empty unless a request volume was given.
    for e, be in zip(at_volume, evens, strict=False):
        gpus = hosted.gpus_for(e.daily_output_tokens)
        gpu_text = "the GPU" if gpus == 1 else f"{gpus} GPUs"
        console.print(
            f"At {e.requests_per_day:,f} requests a day: {be.price.name or be.price.model} costs "
            f"{format_usd(e.monthly_cost)} a month; {gpu_text} "
            f"{format_usd(hosted.monthly_cost * gpus)}."
        )
    if plot:
        console.print(f"plot saved to {plot}")


# --------------------------------------------------------------------------------------------
# cost prices
# --------------------------------------------------------------------------------------------


def run_prices(args: argparse.Namespace) -> int:
    """Run ``smolgen cost prices``."""
    table = _table(args)
    if args.json:
        _print_json(table.to_dict())
        return 0

    from rich.console import Console
    from rich.table import Table

    from smolgen.lab.cost import format_usd

    console = Console(markup=False)  # names and sources are shown as written
    t = Table(title=f"API prices, $ per 1M tokens ({table.origin})", title_justify="left")
    for col in ("model", "provider", "input", "output", "context", "as of", "source"):
        t.add_column(col, justify="right" if col in ("input", "output", "context") else "left")
    for m in table.models.values():
        t.add_row(
            m.model,
            m.provider,
            format_usd(m.input_per_mtok),
            format_usd(m.output_per_mtok),
            f"{m.context_window:,}" if m.context_window else "-",
            m.as_of or "-",
            m.source,
        )
    console.print(t)
    if table.gpus:
        g = Table(title="GPU prices", title_justify="left")
        for col in ("gpu", "name", "$/hour", "tokens/s", "as of", "source"):
            g.add_column(col, justify="right" if col in ("$/hour", "tokens/s") else "left")
        for gpu in table.gpus.values():
            g.add_row(
                gpu.gpu,
                gpu.name,
                format_usd(gpu.hourly),
                f"{gpu.tokens_per_second:,f}" if gpu.tokens_per_second else "-",
                gpu.as_of or "-",
                gpu.source,
            )
        console.print(g)
    return 0


# --------------------------------------------------------------------------------------------
# cost batch
# --------------------------------------------------------------------------------------------


def run_batch(args: argparse.Namespace) -> int:
    """Run ``smolgen cost batch``."""
    from smolgen.lab.cost import batch_job_cost, format_tokens, format_usd

    measured = _batch_summary(args.from_summary) if args.from_summary else {}
    given = {
        "input_tokens": args.input_tokens,
        "output_tokens": args.output_tokens,
        "tokens_per_second": args.tokens_per_second,
    }
    values: dict[str, Decimal] = {}
    for name, value in given.items():
        value = value if value is not None else measured.get(name)
        if value is None:
            flag = "--" + name.replace("_", "-")
            raise InvalidArgumentError(f"give {flag}, or --from-summary FILE")
        values[name] = value
    job = batch_job_cost(
        args.requests,
        values["input_tokens"],
        values["output_tokens"],
        values["tokens_per_second"],
        args.node_hourly,
        deadline_hours=args.hours,
        vs=tuple(args.vs or ()),
        price_table=_table(args),
    )
    if args.json:
        _print_json(job.to_dict())
        return 0
    print(
        f"{format_tokens(job.requests)} requests x ({format_tokens(job.input_tokens)} in + "
        f"{format_tokens(job.output_tokens)} out tokens) at {job.tokens_per_second:,.0f} "
        "completion tokens/s a node"
    )
    print(
        f"{job.node_hours:,.1f} node-hours: {job.nodes} node{'s' if job.nodes > 1 else ''} "
        f"finish{'' if job.nodes > 1 else 'es'} in {job.wall_hours:,.1f} h "
        f"(deadline {job.deadline_hours:g} h)"
    )
    print(
        f"cost {format_usd(job.cost)} at {format_usd(job.node_hourly)}/node-hour "
        f"({format_usd(job.cost_per_mtok)} per 1M completion tokens)"
    )
    for c in job.vs:
        times = f", {c.times_self_hosted:,.1f}x" if c.times_self_hosted is not None else ""
        print(f"  through {c.model}: {format_usd(c.cost)}{times}")
    return 0


def _batch_summary(path: Path) -> dict[str, Decimal]:
    """Tokens per request and throughput from a ``smolgen batch --json`` summary."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        succeeded = Decimal(doc["succeeded"])
        values = {
            "input_tokens": Decimal(doc["prompt_tokens"]) / succeeded,
            "output_tokens": Decimal(doc["completion_tokens"]) / succeeded,
            "tokens_per_second": Decimal(str(doc["completion_tokens_per_s"])),
        }
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as e:
        raise InvalidArgumentError(
            f"{path}: not a 'smolgen batch --json' summary with answered requests ({e})"
        ) from None
    return values
