"""``smolgen batch``: a file of requests in the OpenAI Batch API's format, answered locally,
resumable."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from . import add_sampling_arguments, model_argument, sampling_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="answer a JSONL file of requests (OpenAI Batch API format), resumable",
        description="Answer every request of INPUT (one per line: custom_id, method POST, url "
        "/v1/chat/completions or /v1/completions, body) into OUTPUT, one line per answer in "
        "OpenAI's batch output format, in the order they complete. Requests decode together. "
        "Each answer is synced to disk as it is written; run the same command again after an "
        "interruption and it skips what OUTPUT already holds. Needs the 'serve' extra.",
    )
    p.add_argument("input", metavar="INPUT", help="the requests, JSONL")
    p.add_argument("output", metavar="OUTPUT", help="the answers, JSONL (appended to)")
    model_argument(p)
    p.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests decoding together (default: 8)",
    )
    p.add_argument(
        "--max-tokens-default",
        type=int,
        default=512,
        help="max_tokens of a request that gives none, capped by what the context window "
        "has left (default: 512)",
    )
    p.add_argument(
        "--model-id",
        default=None,
        help="the model the answers name (default: the alias, or the file's name)",
    )
    p.add_argument(
        "--compare",
        metavar="API_MODEL",
        default=None,
        help="also price the job's tokens at this API model's list prices (e.g. gpt-4o-mini); "
        "the tokens are SmolLM2's, so read it as an estimate",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="answer on the Ray cluster at ADDRESS ('local' starts one here): each actor "
        "loads the model (a path or alias every node resolves) with --threads CPUs; needs "
        "the 'ray' extra",
    )
    p.add_argument(
        "--ray-actors",
        type=int,
        default=1,
        metavar="N",
        help="actors on the cluster, one model each (default: 1)",
    )
    plain = p.add_argument_group(
        "plain prompts",
        "INPUT as rows of text instead (JSONL, CSV or Parquet, by suffix): each row's field "
        "asked as a chat message, with these settings; answers as above, custom_id the row's "
        "--id-field or row-N",
    )
    plain.add_argument("--prompt-field", metavar="FIELD", help="the column holding the prompt")
    plain.add_argument("--id-field", metavar="FIELD", help="the column naming each row")
    plain.add_argument("--system", metavar="TEXT", help="a system message before each prompt")
    add_sampling_arguments(plain, only=PLAIN_SETTINGS)
    p.set_defaults(func=run)


#: The request settings the command line gives plain prompts.
PLAIN_SETTINGS = ("temperature", "top_p", "seed", "stop")


def run(args: argparse.Namespace) -> int:
    from ..batches import run_batch_file
    from ..hub import DEFAULT_MODEL
    from . import load_model, require_extra
    from .serve import served_name

    if args.ray is not None:
        require_extra("--ray", "ray", "ray")
    if args.prompt_field is not None and Path(args.input).suffix.lower() == ".parquet":
        require_extra("reading Parquet", "parquet", "pyarrow")
    if args.concurrency < 1 or args.max_tokens_default < 1:
        raise InvalidArgumentError("--concurrency and --max-tokens-default must be >= 1")
    settings = sampling_options(args)
    if args.prompt_field is None and (settings or args.id_field or args.system):
        raise InvalidArgumentError(
            "--id-field, --system and the request settings are for plain prompts "
            "(--prompt-field); a batch request line carries its own"
        )
    price = None
    if args.compare is not None:  # an unknown model fails before the job, not after
        from ..lab.cost.prices import default_prices

        price = default_prices().model(args.compare)
    model_id = args.model_id or served_name(args.model or DEFAULT_MODEL)
    job: dict[str, Any] = {
        "model_id": model_id,
        "concurrency": args.concurrency,
        "max_tokens_default": args.max_tokens_default,
        "prompt_field": args.prompt_field,
        "id_field": args.id_field,
        "system": args.system,
        "settings": settings,
    }
    if args.ray is not None:
        from ..ray import run_on_ray

        if args.ray_actors < 1 or (args.threads is not None and args.threads < 1):
            raise InvalidArgumentError("--ray-actors and --threads must be >= 1")
        with _Progress() as (on_start, on_record):
            stats = run_on_ray(
                args.ray,
                args.model,
                args.input,
                args.output,
                actors=args.ray_actors,
                threads=args.threads or 1,
                on_start=on_start,
                on_record=on_record,
                **job,
            )
    else:
        model = load_model(args)
        with _Progress() as (on_start, on_record):
            stats = run_batch_file(
                model, args.input, args.output, on_start=on_start, on_record=on_record, **job
            )
    summary = stats.as_dict()
    if price is not None:
        from ..lab.cost.api import request_cost

        cost = request_cost(stats.prompt_tokens, stats.completion_tokens, price)
        summary["compare"] = {"model": price.model, "api_cost_usd": float(cost)}
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary, args.output)
    return 0


class _Progress:
    """A progress bar on stderr in a terminal (requests, tokens/s, time left), otherwise a
    status line at the start and every 100 requests."""

    def __enter__(
        self,
    ) -> tuple[Callable[[int, int], None], Callable[[dict[str, Any], Any], None]]:
        from rich.console import Console

        console = Console(stderr=True)
        self.bar: Any = None
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("smolgen batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("batch", total=None, rate="")
        return self.on_start, self.on_record

    def on_start(self, to_run: int, done: int) -> None:
        self.total = to_run
        if self.bar is not None:
            self.bar.update(self.task, total=to_run)
        message = f"smolgen batch: {to_run} requests to run"
        if done:
            message += f", {done} already answered in the output"
        print(message, file=sys.stderr, flush=True)

    def on_record(self, record: dict[str, Any], stats: Any) -> None:
        rate = f"{stats.completion_tokens_per_s:,.0f} tok/s, {stats.completion_tokens:,} tokens"
        if self.bar is not None:
            self.bar.update(self.task, completed=stats.requests, rate=rate)
        elif stats.requests % 100 == 0:
            print(
                f"smolgen batch: {stats.requests}/{self.total} ({rate})",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_summary(s: dict[str, Any], output: str) -> None:
    print(
        f"{s['requests']} requests answered into {output} ({s['succeeded']} ok, "
        f"{s['failed']} with an error; {s['skipped']} answered by an earlier run)"
    )
    print(
        f"{s['prompt_tokens']:,} prompt + {s['completion_tokens']:,} completion tokens in "
        f"{s['wall_s']:.1f} s ({s['completion_tokens_per_s']:,.1f} completion tokens/s)"
    )
    if "compare" in s:
        c = s["compare"]
        print(f"the same tokens at {c['model']}'s list prices: ${c['api_cost_usd']:.4f}")
