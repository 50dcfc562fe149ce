"""The ``smolgen`` command: ``generate``, ``chat``, ``serve``, ``batch``, ``check``, ``peek``,
``sweep``, ``pull``, ``quantize``, ``info``, ``bench``, ``tokens``, ``cost``, ``decide``.

Exit codes follow the kind of failure, never the message text:
0 ok, 1 other smolgen error, 2 bad argument, 3 model not found, 4 malformed model file,
5 unsupported model, 6 context length exceeded, 7 download failed, 8 an endpoint check failed,
9 the address to serve at is taken, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .. import errors

if TYPE_CHECKING:
    from ..model import Model

EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.InvalidArgumentError, 2),
    (errors.ModelNotFoundError, 3),
    (errors.MalformedModelError, 4),
    (errors.UnsupportedModelError, 5),
    (errors.ContextLengthExceededError, 6),
    (errors.DownloadError, 7),
    (errors.SmolgenError, 1),
    (ValueError, 2),
)


def build_parser() -> argparse.ArgumentParser:
    from ..lab.cli import cost, decide, tokens
    from . import batch, bench, chat, check, generate, info, peek, pull, quantize, serve, sweep

    parser = argparse.ArgumentParser(
        prog="smolgen",
        description="Run SmolLM2 locally, fast, with the lid off.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (
        generate,
        chat,
        serve,
        batch,
        check,
        peek,
        sweep,
        pull,
        quantize,
        info,
        bench,
        tokens,
        cost,
        decide,
    ):
        module.register(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return f"smolgen {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except tuple(cls for cls, _ in EXIT_CODES) as e:
        print(f"smolgen: error: {e}", file=sys.stderr)
        return next(code for cls, code in EXIT_CODES if isinstance(e, cls))


def model_argument(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """The model spec argument every model command takes."""
    help_text = (
        "a .gguf file, a Hugging Face directory or repo id, or an alias "
        "(default: smollm2-135m-instruct)"
    )
    if positional:
        parser.add_argument("model", nargs="?", default=None, help=help_text)
    else:
        parser.add_argument("-m", "--model", default=None, help=help_text)
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or metal (default: cpu)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["f32", "f16", "bf16"],
        help="convert safetensors weights to this type",
    )
    parser.add_argument(
        "--quantize",
        default=None,
        metavar="TYPE",
        help="quantize safetensors weights at load: q8_0, q4_0, q4_k, ... (ggml's reference "
        "rounding)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: one per core)"
    )


def load_model(args: argparse.Namespace, **options: Any) -> Model:
    """The model the arguments of :func:`model_argument` name, loaded with them (and
    ``options``, e.g. ``prefix_cache_bytes``)."""
    from .. import load

    return load(
        args.model,
        device=args.device,
        dtype=args.dtype,
        quantize=args.quantize,
        threads=args.threads,
        **options,
    )


# The settings of a generation, one entry each: (flags, type, help). The defaults are the core's
# (`GenerateOptions`): an option left out is not passed on, so the core's default applies.
SAMPLING_ARGUMENTS: tuple[tuple[tuple[str, ...], type, str], ...] = (
    (
        ("-n", "--max-tokens"),
        int,
        "tokens to generate (default: 256, or what the context has left)",
    ),
    (("-t", "--temperature"), float, "0 is greedy (default: 1)"),
    (("--top-p",), float, "nucleus sampling: the likeliest tokens up to this mass (default: off)"),
    (("--top-k",), int, "keep the k likeliest tokens (default: off)"),
    (("--min-p",), float, "drop tokens under this fraction of the top one's probability"),
    (("--repetition-penalty",), float, "on every token seen; 1 is off (default: off)"),
    (("--frequency-penalty",), float, "per occurrence of a generated token, in [-2, 2]"),
    (("--presence-penalty",), float, "once per generated token, in [-2, 2]"),
    (("-s", "--seed"), int, "for reproducible sampling"),
    (("--stop",), str, "stop before this text (repeatable)"),
)


def add_sampling_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    only: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    **presets: object,
) -> None:
    """The generation settings a command takes: :data:`SAMPLING_ARGUMENTS`, ``only`` those
    named or all but those in ``skip``. ``presets`` are the command's own defaults (``chat``
    answers at temperature 0.7); any other setting left out keeps the core's default."""
    for flags, kind, help_text in SAMPLING_ARGUMENTS:
        name = _name(flags)
        if name in skip or (only is not None and name not in only):
            continue
        if name in presets:
            help_text = f"{help_text.split(' (default')[0]} (default: {presets[name]})"
        if name == "stop":
            parser.add_argument(*flags, action="append", metavar="TEXT", help=help_text)
        else:
            parser.add_argument(*flags, type=kind, default=None, help=help_text)
    parser.set_defaults(**presets)


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (or preset), as ``generate``'s keywords."""
    names = (_name(flags) for flags, _, _ in SAMPLING_ARGUMENTS)
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _name(flags: tuple[str, ...]) -> str:
    """``("-t", "--temperature")`` -> ``"temperature"``: the keyword of ``generate``."""
    return flags[-1].removeprefix("--").replace("-", "_")


if __name__ == "__main__":
    sys.exit(main())
