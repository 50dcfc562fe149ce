"""``smolgen info``: what a model is."""

from __future__ import annotations

import argparse
import json

from . import model_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        aliases=["show"],
        help="show a model's architecture, sizes and storage",
        description="Load MODEL and show its architecture, sizes, weight storage types and "
        "memory needs.",
    )
    model_argument(p, positional=True)
    p.add_argument("--json", action="store_true", help="print the info as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import load_model

    info = load_model(args).info
    if args.json:
        print(json.dumps(info))
        return 0
    table = Table(title=info["path"], show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [
        ("architecture", f"{info['architecture']} ({info['format']})"),
        ("parameters", f"{info['parameters']:,}"),
        ("layers", str(info["layers"])),
        ("heads (query / KV)", f"{info['heads']} / {info['kv_heads']} x {info['head_dim']}"),
        ("hidden / MLP", f"{info['hidden_size']} / {info['intermediate_size']}"),
        ("context length", f"{info['context_length']:,} tokens"),
        ("vocabulary", f"{info['vocab_size']:,} tokens"),
        ("RoPE", f"theta {info['rope_theta']:g}, {info['rope_layout']}"),
        ("tied embeddings", "yes" if info["tied_embeddings"] else "no"),
        ("weights", f"{info['weight_bytes'] / 1e6:.1f} MB"),
        (
            "KV cache",
            f"{info['kv_cache_format']}, {info['kv_bytes_per_token'] / 1024:.1f} KiB per token "
            f"({info['kv_bytes_per_token'] * info['context_length'] / 1e6:.0f} MB "
            "for the full context)",
        ),
        ("device", info["device"]),
        *([("GPU weights", info["gpu_weights"])] if info.get("gpu_weights") else []),
        ("load time", f"{info['load_seconds'] * 1000:.0f} ms"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    for kind, dtype in info["weight_types"].items():
        table.add_row(f"  {kind}", dtype)
    Console().print(table)
    return 0
