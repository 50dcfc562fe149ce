"""``smolgen generate``: stream a completion to the terminal, then a one-line summary."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from ..errors import InternalError
from . import add_sampling_arguments, model_argument, sampling_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text from a prompt",
        description="Continue PROMPT with the model, streaming the text as it is generated.",
    )
    p.add_argument("prompt", help="the text to continue ('-' reads standard input)")
    model_argument(p)
    add_sampling_arguments(p)
    p.add_argument(
        "--show-probs",
        action="store_true",
        help="mark each token by its probability under the model: colours in a terminal, "
        "[NN%%] after unlikely tokens otherwise",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="save a timeline of the prefill pass and every decode step (needs matplotlib)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (text, tokens, logprobs, usage, timings) instead",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    structure = p.add_argument_group(
        "structured output", "the text must match (one at most; see docs/structured-output.md)"
    ).add_mutually_exclusive_group()
    structure.add_argument(
        "--json-schema",
        metavar="SCHEMA",
        help='a JSON Schema, as JSON text or a file holding it: \'{"type": "object"}\' is any '
        "JSON object",
    )
    structure.add_argument("--regex", metavar="PATTERN", help="a regular expression")
    structure.add_argument(
        "--grammar", metavar="LARK", help="a Lark grammar, as text or a file holding it"
    )
    p.set_defaults(func=run)


def constraint_options(args: argparse.Namespace) -> dict[str, Any]:
    """The structured-output keyword the command line asks for: a schema or grammar given as
    the name of an existing file is read from it."""
    for name in ("json_schema", "regex", "grammar"):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name != "regex" and os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                value = f.read()
        return {name: value}
    return {}


def run(args: argparse.Namespace) -> int:
    from . import load_model, require_extra

    if args.plot:
        require_extra("--plot", "plot", "matplotlib")
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    model = load_model(args)
    stream = model.generate(
        prompt,
        **sampling_options(args),
        **constraint_options(args),
        logprobs=0 if args.show_probs or args.json else None,
        stream=True,
    )
    out = sys.stdout
    marker = ProbabilityMarker(out) if args.show_probs and not args.json else None
    for chunk in stream:
        if args.json or not chunk.text:
            continue
        if marker and chunk.logprob is not None:
            marker.write(chunk.text, math.exp(chunk.logprob.logprob))
        else:
            out.write(chunk.text)
        out.flush()
    completion = stream.completion
    if completion is None:  # the stream ended without a finishing chunk: a bug of ours
        raise InternalError("generation ended without a result")
    if args.plot:
        from ..plots import plot_timeline

        t = completion.timings
        plot_timeline(t.prefill_s, t.decode_steps_s, completion.usage.prompt_tokens, args.plot)
    if args.json:
        record = completion.to_dict()
        record["model"] = model.info["path"]
        record["prompt"] = prompt
        json.dump(record, out, ensure_ascii=False)
        out.write("\n")
        return 0
    out.write("\n")
    if marker:
        marker.legend()
    if not args.quiet:
        t, u = completion.timings, completion.usage
        print(
            f"[{u.completion_tokens} tokens, {u.prompt_tokens} prompt | "
            f"TTFT {t.ttft_s * 1000:.0f} ms | prefill {t.prefill_tokens_per_s:.0f} tok/s | "
            f"decode {t.decode_tokens_per_s:.1f} tok/s | KV cache "
            f"{completion.kv_cache_bytes / 2**20:.1f} MiB | finish: {completion.finish_reason}]",
            file=sys.stderr,
        )
    return 0


class ProbabilityMarker:
    """Writes generated text marked by how likely each token was."""

    # (lowest probability, colour) from likely to unlikely.
    BANDS = ((0.9, "green"), (0.5, ""), (0.2, "yellow"), (0.0, "red"))
    # Without colours, tokens under this probability get their percentage after them.
    ANNOTATE_BELOW = 0.5

    def __init__(self, out) -> None:
        self.out = out
        self.color = out.isatty()
        if self.color:
            from rich.console import Console

            self.console = Console(file=out, highlight=False, markup=False)

    def write(self, text: str, probability: float) -> None:
        if self.color:
            style = next(c for lowest, c in self.BANDS if probability >= lowest)
            self.console.print(text, style=style or None, end="")
        elif probability < self.ANNOTATE_BELOW:
            self.out.write(f"{text}[{probability:.0%}]")
        else:
            self.out.write(text)

    def legend(self) -> None:
        if self.color:
            self.console.print("p >= 90% ", style="green", end="")
            self.console.print("| >= 50% | ", end="")
            self.console.print(">= 20% ", style="yellow", end="")
            self.console.print("| < 20%", style="red")
        else:
            self.out.write(
                f"[NN%]: the token's probability, shown under {self.ANNOTATE_BELOW:.0%}\n"
            )
