"""``smolgen quantize``: write a model file in another type."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..convert import file_types

    p = subparsers.add_parser(
        "quantize",
        help="write a model as a GGUF of another type (q4_k_m, q8_0, bf16, ...)",
        description="Write INPUT (a .gguf, a Hugging Face directory, an alias or a repo id) to "
        "the GGUF file OUTPUT as TYPE, with llama.cpp's per-tensor mixes and ggml's reference "
        "rounding: the file llama.cpp's converter and llama-quantize would write from the same "
        "weights. It loads in smolgen and in llama.cpp.",
    )
    p.add_argument("input", help="a .gguf file, a Hugging Face directory, an alias or a repo id")
    p.add_argument("output", help="the GGUF file to write")
    p.add_argument(
        "--type",
        dest="file_type",
        default="Q4_K_M",
        metavar="TYPE",
        help=f"one of: {', '.join(file_types())} (default: Q4_K_M; q4_k means Q4_K_M)",
    )
    p.add_argument("--threads", type=int, default=None, help="default: one per core")
    p.add_argument(
        "--allow-requantize",
        action="store_true",
        help="quantize a file that is already quantized (its rounding errors compound)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..convert import quantize

    def progress(i: int, n: int, name: str, stored: str, written: str) -> None:
        if not args.json:
            print(f"[{i + 1:4}/{n}] {name:<28} {stored:>5} -> {written}", file=sys.stderr)

    t0 = time.perf_counter()
    result = quantize(
        args.input,
        args.output,
        args.file_type,
        threads=args.threads,
        allow_requantize=args.allow_requantize,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "file_type": result.file_type,
                    "input_bytes": result.input_bytes,
                    "output_bytes": result.output_bytes,
                    "seconds": round(seconds, 3),
                    "types": result.type_counts(),
                }
            )
        )
        return 0
    counts = ", ".join(f"{n} {t}" for t, n in result.type_counts().items())
    print(
        f"{result.path}: {result.file_type}, {result.output_bytes / 1e6:,.1f} MB "
        f"(tensors were {result.input_bytes / 1e6:,.1f} MB) in {seconds:.1f} s; "
        f"tensors: {counts}"
    )
    return 0
