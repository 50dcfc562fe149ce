"""``smolgen tokens``: count a text's tokens with several tokenizers, or measure languages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smolgen.errors import InvalidArgumentError

DESCRIPTION = """\
Tokenize a text with several tokenizers and show, for each, the token count, the pieces and
characters, words and bytes per token, and how far the len(text)/4 rule of thumb is off.

Tokenizers (-t, repeatable or comma-separated; default: smollm2, cl100k_base, o200k_base):
  smollm2          SmolLM2's tokenizer, from the model smolgen runs
  cl100k_base      GPT-4 / GPT-3.5 (through tiktoken, offline)
  o200k_base       GPT-4o / GPT-4o mini (through tiktoken, offline)
  gpt-4o, gpt-4    an OpenAI model name: its tiktoken encoding
  PATH             a tokenizer.json (or a directory holding one), or a .gguf model file

With --languages, tokenize smolgen's multilingual samples (the same sentences in English,
Korean, Japanese, Chinese, Arabic, Russian and as Python code) and report each language's token
cost relative to English."""

EPILOG = """\
examples:
  smolgen tokens "Can I get a refund?"
  smolgen tokens "東京は日本の首都です。" --tokenizer cl100k_base,o200k_base
  smolgen tokens --file prompt.txt --tokenizer ./my-tokenizer.json --json
  smolgen tokens --languages --tokenizer cl100k_base --tokenizer o200k_base"""

_PIECE_STYLES = ("black on bright_cyan", "black on bright_yellow")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tokens`` command."""
    p = subparsers.add_parser(
        "tokens",
        help="count tokens and compare tokenizers, or measure languages",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("text", nargs="?", help="the text to tokenize ('-' reads standard input)")
    p.add_argument(
        "--tokenizer",
        action="append",
        metavar="NAME",
        help="a tokenizer name or path (repeatable, or comma-separated)",
    )
    p.add_argument("-f", "--file", type=Path, help="read the text from this file (UTF-8)")
    p.add_argument(
        "--languages",
        action="store_true",
        help="report each language's token cost relative to English instead",
    )
    p.add_argument(
        "--samples",
        type=Path,
        metavar="FILE",
        help="with --languages: a JSON file of your own multilingual samples",
    )
    p.add_argument("--no-pieces", action="store_true", help="show counts only, not the pieces")
    p.add_argument("--json", action="store_true", help="print JSON to standard output")
    p.set_defaults(func=run)


def _tokenizer_specs(values: list[str] | None) -> list[str]:
    from smolgen.lab.tokens import DEFAULT_TOKENIZERS

    if not values:
        return list(DEFAULT_TOKENIZERS)
    out: list[str] = []
    for value in values:
        parts = [value] if Path(value).exists() else value.split(",")
        out += [p.strip() for p in parts if p.strip()]
    if not out:
        raise InvalidArgumentError("-t names no tokenizer: give a name such as cl100k_base")
    return out


def _read_text(args: argparse.Namespace) -> str:
    if args.file is not None and args.text is not None:
        raise InvalidArgumentError("give the text or --file, not both")
    if args.file is not None:
        try:
            return Path(args.file).read_text("utf-8")
        except OSError as exc:
            raise InvalidArgumentError(f"{args.file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"{args.file}: not UTF-8 text") from exc
    if args.text == "-":
        return sys.stdin.read()
    if args.text is None:
        raise InvalidArgumentError("give a text to tokenize, --file, or --languages")
    return str(args.text)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    """Run ``smolgen tokens``."""
    specs = _tokenizer_specs(args.tokenizer)
    if args.languages:
        if args.text is not None or args.file is not None:
            raise InvalidArgumentError("--languages measures the built-in samples: give no text")
        return _run_languages(args, specs)
    from smolgen.lab.tokens import compare

    text = _read_text(args)
    results = compare(text, specs)
    if args.json:
        doc = {
            "text": text,
            "results": [r.to_dict(pieces=not args.no_pieces) for r in results.values()],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    _print_comparison(text, results, pieces=not args.no_pieces)
    return 0


def _print_comparison(text: str, results: dict[str, Any], *, pieces: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from smolgen.lab.tokens import readable

    console = Console(markup=False)  # names and pieces are shown as written
    first = next(iter(results.values()), None)
    if first is not None:
        console.print(
            f"{first.n_chars:,} characters, {first.n_words:,} words, {first.n_bytes:,} UTF-8 "
            f"bytes; len(text)/4 = {first.len_div_4:,.1f}"
        )
    table = Table(title="Tokens per tokenizer", title_justify="left")
    table.add_column("tokenizer", no_wrap=True)
    table.add_column("vocab", justify="right")
    table.add_column("tokens", justify="right", style="bold")
    table.add_column("chars/tok", justify="right")
    table.add_column("words/tok", justify="right")
    table.add_column("bytes/tok", justify="right")
    table.add_column("vs len/4", justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r.vocab_size:,}",
            f"{r.n_tokens:,}",
            _fmt(r.chars_per_token),
            _fmt(r.words_per_token),
            _fmt(r.bytes_per_token),
            _fmt(r.len_div_4_error),
        )
    console.print(table)
    console.print(
        "vs len/4: actual tokens / (characters / 4); 1.00 means the rule of thumb is right",
        style="dim",
    )
    if not pieces:
        return
    # Colours mark the piece boundaries in a terminal; without colour, a bar does.
    sep = "" if console.color_system else "|"
    for name, r in results.items():
        line = Text()
        for i, piece in enumerate(r.pieces):
            if i and sep:
                line.append(sep, style="dim")
            line.append(readable(piece.text), style=_PIECE_STYLES[i % 2])
        console.print(Text(f"{name} ({r.n_tokens} tokens): ", style="bold") + line)
        console.print(Text("  ids: " + " ".join(str(i) for i in r.ids), style="dim"))


def _run_languages(args: argparse.Namespace, specs: list[str]) -> int:
    from smolgen.lab.tokens import language_report

    report = language_report(specs, args.samples)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console(markup=False)  # names and pieces are shown as written
    languages: dict[str, str] = {}
    for row in report.rows:
        languages.setdefault(row.language, row.name)
    reference = languages.get(report.reference, report.reference)
    console.print(f"Tokens for the same sentences, and cost relative to {reference}", style="bold")
    table = Table()
    table.add_column("language")
    for name in report.tokenizers:
        table.add_column(f"{name}\ntokens (x)", justify="right")
    table.add_column("chars", justify="right")
    for code, lang in languages.items():
        rows = [report.row(code, name) for name in report.tokenizers]
        cells = [f"{row.n_tokens:,} ({_fmt(row.relative_cost)}x)" for row in rows]
        table.add_row(lang, *cells, f"{rows[0].n_chars:,}")
    console.print(table)

    console.print(
        "Actual tokens / (len(text)/4): 1.00 means the rule of thumb is right", style="bold"
    )
    off = Table()
    off.add_column("language")
    for name in report.tokenizers:
        off.add_column(name, justify="right")
    for code, lang in languages.items():
        off.add_row(lang, *(_fmt(report.row(code, n).len_div_4_error) for n in report.tokenizers))
    console.print(off)
    return 0
