"""``smolgen check``: one smoke test for a local or hosted OpenAI- or Anthropic-compatible
endpoint."""

from __future__ import annotations

import argparse
import json
import os

from ..errors import InvalidArgumentError

#: The exit status when an assertion about the endpoint failed.
CHECK_FAILED = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..check import CHECKS, TIMEOUT, Settings

    defaults = Settings()

    p = subparsers.add_parser(
        "check",
        help="smoke-test an OpenAI- or Anthropic-compatible endpoint (ours or any other)",
        description="Send real requests to URL and assert what clients rely on: a plain chat "
        "with consistent usage; a streamed chat (chunks, the end of the stream, usage at the "
        "end, UTF-8 intact); stop sequences and max_tokens honoured; the error shape of a bad "
        "request and of a prompt past the context window; throttled answers (429/503/529) "
        "carrying Retry-After, retried after it (else after 1, 2, 4 s); time to first token "
        "p50/p95 and tokens/s. Exit status 8 when a check fails. Every check costs tokens on a "
        "hosted API; 'overflow' sends --overflow-words words (skip it there with --skip "
        "overflow, or raise it past the model's window).",
    )
    p.add_argument(
        "url",
        metavar="URL",
        help="the server's root or its /v1, e.g. "
        "http://127.0.0.1:8000 or https://api.openai.com/v1",
    )
    p.add_argument(
        "--model",
        default=None,
        help="the model to ask for (default: the first one /v1/models lists)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="sent as 'Authorization: Bearer' (OpenAI) or 'x-api-key' (Anthropic); default: "
        "$OPENAI_API_KEY or $ANTHROPIC_API_KEY",
    )
    p.add_argument(
        "--anthropic",
        action="store_true",
        help="speak Anthropic's Messages API (/v1/messages) instead of OpenAI's",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=defaults.requests,
        help=f"streamed requests the latency is measured over (default: {defaults.requests})",
    )
    p.add_argument(
        "--burst",
        type=int,
        default=defaults.burst,
        help=f"concurrent requests of the throttling check (default: {defaults.burst})",
    )
    p.add_argument(
        "--overflow-words",
        type=int,
        default=defaults.overflow_words,
        help="words in the prompt that must overflow the context (default: "
        f"{defaults.overflow_words})",
    )
    p.add_argument(
        "--max-ttft-p95-ms",
        type=float,
        default=None,
        help="fail when the p95 time to first token is above this",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT,
        help=f"seconds one request may take (default: {TIMEOUT:g})",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=CHECKS,
        metavar="CHECK",
        help=f"leave a check out (repeatable): {', '.join(CHECKS)}",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..check import Endpoint, Outcome, Settings, parse_url, run_checks

    for flag, value, most in (
        ("--requests", args.requests, 10_000),
        ("--burst", args.burst, 256),
        ("--overflow-words", args.overflow_words, 2_000_000),
    ):
        if not 1 <= value <= most:
            raise InvalidArgumentError(f"{flag} must be from 1 to {most:,}, not {value}")
    if not 0 < args.timeout <= 3600:
        raise InvalidArgumentError(f"--timeout must be from 0 to 3600 seconds, not {args.timeout}")
    if args.max_ttft_p95_ms is not None and not args.max_ttft_p95_ms > 0:
        raise InvalidArgumentError("--max-ttft-p95-ms must be positive")
    key_variable = "ANTHROPIC_API_KEY" if args.anthropic else "OPENAI_API_KEY"
    endpoint = Endpoint(
        parse_url(args.url),
        model=args.model,
        api_key=args.api_key or os.environ.get(key_variable),
        anthropic=args.anthropic,
        timeout=args.timeout,
    )
    settings = Settings(
        requests=args.requests,
        burst=args.burst,
        overflow_words=args.overflow_words,
        max_ttft_p95_ms=args.max_ttft_p95_ms,
    )
    console = Console(stderr=args.json)
    marks = {True: "[green]pass[/]", False: "[bold red]FAIL[/]", None: "[dim]skip[/]"}
    api = "Anthropic" if args.anthropic else "OpenAI"
    with console.status(f"checking {endpoint.root} ({api} API)") as status:

        def done(outcome: Outcome) -> None:
            status.update(f"checking {endpoint.root} ({api} API): {outcome.name} done")

        report = run_checks(endpoint, settings, tuple(args.skip), on_outcome=done)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
        return 0 if report.ok else CHECK_FAILED
    table = Table(title=f"{report.endpoint} ({api} API), model {report.model or '?'}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for o in report.outcomes:
        table.add_row(o.name, marks[o.passed], escape(o.detail))
    console.print(table)
    failed = sum(o.passed is False for o in report.outcomes)
    if failed:
        console.print(f"[bold red]{failed} check(s) failed[/]")
    return 0 if report.ok else CHECK_FAILED
