"""mkdocs hook: `<!-- cli-reference -->` in a page becomes the help of `smolgen` and of each of
its commands, as argparse prints it, so the reference cannot drift from the parsers."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    if MARKER not in markdown:
        return markdown
    from smolgen.cli import build_parser

    # argparse wraps help to the terminal's width: a fixed one keeps the page stable.
    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    sections = [_block(parser.format_help())]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen: set[int] = set()
    for name, sub in commands.choices.items():
        if id(sub) in seen:
            continue  # an alias (`show` is `info`): its command's section says so
        seen.add(id(sub))
        sections.append(f"## smolgen {name}\n\n{_block(sub.format_help())}")
    return markdown.replace(MARKER, "\n\n".join(sections))


def _block(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```"
