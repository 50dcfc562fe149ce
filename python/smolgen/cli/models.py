"""``smolgen list``, ``smolgen rm`` and ``smolgen ps``: the models in the cache and the servers
running, as ``ollama`` has them."""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from typing import Any

from ..errors import ModelNotFoundError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "list",
        help="list the models in the cache",
        description="The models pulled into the cache ($SMOLGEN_HOME or ~/.cache/smolgen): "
        "alias, size and path. `smolgen pull --list` shows every alias there is.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run_list)

    p = subparsers.add_parser(
        "rm",
        help="remove models from the cache",
        description="Delete cached models by alias (a later use pulls them again).",
    )
    p.add_argument("aliases", nargs="+", metavar="ALIAS", help="the models to remove")
    p.add_argument("--json", action="store_true", help="print what was removed as JSON")
    p.set_defaults(func=run_rm)

    p = subparsers.add_parser(
        "ps",
        help="list the servers running on this machine",
        description="Every `smolgen serve` running on this machine: its address, model, "
        "uptime and, from its /health, the requests running and waiting.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run_ps)


def cached_models() -> list[dict[str, Any]]:
    from ..hub import catalog

    return [
        {"alias": m["alias"], "bytes": m["bytes"], "path": m["path"]}
        for m in catalog()
        if m["cached"]
    ]


def run_list(args: argparse.Namespace) -> int:
    models = cached_models()
    if args.json:
        print(json.dumps(models))
        return 0
    from rich.console import Console
    from rich.table import Table

    if not models:
        print("no models in the cache: smolgen pull ALIAS (smolgen pull --list shows them)")
        return 0
    table = Table("alias", "size", "path")
    for m in models:
        table.add_row(m["alias"], f"{m['bytes'] / 1e6:,.0f} MB", m["path"])
    Console().print(table)
    return 0


def run_rm(args: argparse.Namespace) -> int:
    from ..hub import ALIASES, cached_path, remove
    from . import did_you_mean

    unknown = [a for a in args.aliases if a not in ALIASES]
    if unknown:
        raise ModelNotFoundError(
            f"unknown model alias {unknown[0]!r}{did_you_mean(unknown[0], ALIASES)} "
            f"(known: {', '.join(ALIASES)})",
            path=unknown[0],
        )
    removed = []
    for name in args.aliases:
        freed = remove(ALIASES[name])
        removed.append({"alias": name, "path": str(cached_path(ALIASES[name])), "bytes": freed})
        if not args.json:
            print(f"removed {name} ({freed / 1e6:,.0f} MB)")
    if args.json:
        print(json.dumps(removed))
    return 0


def server_state(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """What a server's /health says of its requests, or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            health = json.loads(r.read(1 << 20))
        return dict(health.get("requests", {}))
    except (OSError, ValueError):
        return None


def run_ps(args: argparse.Namespace) -> int:
    from ..running import running_servers

    servers = running_servers()
    for s in servers:
        s["uptime_s"] = round(time.time() - s.get("started", time.time()), 1)
        s["requests"] = server_state(s["url"])
    if args.json:
        print(json.dumps(servers))
        return 0
    if not servers:
        print("no smolgen servers running on this machine")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("pid", "url", "model", "up", "running", "waiting")
    for s in servers:
        req = s["requests"] or {}
        table.add_row(
            str(s["pid"]),
            s["url"],
            s["model"],
            _duration(s["uptime_s"]),
            str(req.get("running", "?")),
            str(req.get("waiting", "?")),
        )
    Console().print(table)
    return 0


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"
