"""``smolgen bench``: how fast a model runs on this machine, for sizing a device.

Load time, memory, time to first token, prefill and decode speed (with the per-step tail),
decode with several concurrent sequences, and the memory bandwidth decoding achieves next to
what the machine can read. The measuring is :func:`smolgen.bench.run_bench`; this module parses
the options, shows progress on stderr and prints the table (or JSON) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import model_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure load time, memory, TTFT, prefill and decode speed on this machine",
        description="Load MODEL and measure what sizing a device needs: load time, resident "
        "memory, time to first token, prefill and decode tokens/s (p50/p95 per step), decode "
        "with several concurrent sequences, and the weight-read bandwidth decoding achieves "
        "next to the machine's. Greedy runs of a fixed length, prefix cache off, after one "
        "warm-up; each number is the median of --repeats runs.",
    )
    model_argument(p, positional=True)
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=512,
        help="prompt length for the prefill measurement (default: 512)",
    )
    p.add_argument(
        "--gen-tokens",
        type=int,
        default=128,
        help="tokens decoded per run, after a 16-token prompt (default: 128)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement (default: 3)")
    p.add_argument(
        "--batch",
        default="1,2,4,8",
        metavar="SIZES",
        help="concurrent sequences to decode together, comma-separated (default: 1,2,4,8)",
    )
    p.add_argument(
        "--context",
        default="",
        metavar="DEPTHS",
        help="also measure prefill of prompts this long and decode after them (64 tokens), "
        "comma-separated, e.g. 512,2048,6000 (default: none)",
    )
    p.add_argument(
        "--no-bandwidth",
        action="store_true",
        help="skip measuring the machine's memory read bandwidth",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import check_options, parse_counts, run_bench
    from ..hub import resolve

    options: dict[str, Any] = {
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "repeats": args.repeats,
        "batch_sizes": parse_counts(args.batch),
        "contexts": (
            parse_counts(args.context, "--context", "512,2048,6000") if args.context else []
        ),
    }
    check_options(**options)  # before loading anything
    if args.threads is not None:
        # Our own kernels take the thread count at load; candle's fallback sizes its pool
        # from this variable at first use, which is still ahead in this process.
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    # Fetched first (with its own progress bar, if it is not cached yet): one live display
    # at a time.
    path = resolve(args.model)
    with _progress() as progress:
        report = run_bench(
            path,
            device=args.device,
            dtype=args.dtype,
            quantize=args.quantize,
            bandwidth=not args.no_bandwidth,
            progress=progress,
            **options,
        )
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr in a terminal, otherwise one status line per step."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:

        def line(description: str, step: int, total: int) -> None:
            print(f"smolgen bench: [{step}/{total}] {description}", file=sys.stderr, flush=True)

        yield line
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def update(description: str, step: int, total: int) -> None:
            bar.update(task, description=description, completed=step - 1, total=total)

        yield update


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.1f} MB"


def _print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    model, system, cfg = r["model"], r["system"], r["config"]
    ttft, prefill, decode, bw = r["ttft"], r["prefill"], r["decode"], r["bandwidth"]
    runs = f"median of {cfg['repeats']}" if cfg["repeats"] > 1 else "1 run"
    table = Table(title="smolgen bench", title_justify="left")
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    table.add_column("detail")
    table.add_row(
        "model",
        _mb(model["file_bytes"]),
        f"{model['path']} ({model['format']}), {_mb(model['weight_bytes'])} of weights, "
        f"{model['kv_bytes_per_token'] / 1024:.1f} KiB KV cache per token "
        f"({model.get('kv_cache_format')})",
    )
    table.add_row(
        "engine",
        str(system["engine"]),
        f"{system['threads']} threads on {system['cpu']} ({system['cpus_available']} CPUs); "
        f"kernel path {system['kernel_path']} of {', '.join(system['kernel_paths'])}",
    )
    table.add_row("load", f"{model['load_s'] * 1e3:.0f} ms", "cold load, as the model reports it")
    mem = r["memory"]
    grown = mem.get("model_rss_bytes")
    table.add_row(
        "memory",
        _mb(mem["rss_after_load_bytes"]),
        "resident after load"
        + (f" ({_mb(grown)} of it the load's)" if grown is not None else "")
        + f"; peak {_mb(mem['peak_rss_bytes'])} while measuring",
        end_section=True,
    )
    table.add_row(
        "TTFT",
        f"{ttft['ttft_s'] * 1e3:.1f} ms",
        f"{ttft['prompt_tokens']}-token prompt, {runs}",
    )
    table.add_row(
        "prefill",
        f"{prefill['tokens_per_s']:,.1f} tok/s",
        f"{prefill['prompt_tokens']}-token prompt, {runs}",
    )
    table.add_row(
        "decode",
        f"{decode['tokens_per_s']:,.1f} tok/s",
        f"{decode['gen_tokens']} tokens after {decode['prompt_tokens']}, {runs}; per step "
        f"p50 {decode['step_p50_ms']:.2f} ms ({decode['step_p50_tokens_per_s']:,.1f} tok/s), "
        f"p95 {decode['step_p95_ms']:.2f} ms ({decode['step_p95_tokens_per_s']:,.1f} tok/s)",
        end_section=True,
    )
    batches = r["batched_decode"]
    for i, b in enumerate(batches):
        table.add_row(
            f"batch {b['batch']}",
            f"{b['tokens_per_s']:,.1f} tok/s",
            f"{b['batch']} sequence{'s' if b['batch'] != 1 else ''} stepped together: "
            f"{b['per_sequence_tokens_per_s']:,.1f} tok/s each, "
            f"{b['speedup_vs_single']:.2f}x one sequence alone",
            end_section=i == len(batches) - 1,
        )
    contexts = r.get("context", [])
    for i, c in enumerate(contexts):
        table.add_row(
            f"context {c['context']:,}",
            f"{c['prefill_tokens_per_s']:,.1f} / {c['decode_tokens_per_s']:,.1f} tok/s",
            f"prefill of a {c['context']:,}-token prompt / decode of {c['gen_tokens']} tokens "
            f"after it (step p50 {c['step_p50_ms']:.2f} ms), {runs}",
            end_section=i == len(contexts) - 1,
        )
    if bw["machine_read_gb_per_s"] is None:
        detail = "weight bytes x decode tok/s; machine bandwidth not measured"
    else:
        detail = (
            f"weight bytes x decode tok/s, {bw['ratio']:.0%} of the "
            f"{bw['machine_read_gb_per_s']:.1f} GB/s this machine reads with "
            f"{bw['threads']} threads"
        )
    table.add_row("weight reads", f"{bw['weight_read_gb_per_s']:.2f} GB/s", detail)
    Console(markup=False).print(table)
