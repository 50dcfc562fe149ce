"""The ``smolgen`` command: ``generate``, ``chat``, ``serve``, ``batch``, ``check``, ``peek``,
``sweep``, ``pull``, ``list``, ``rm``, ``ps``, ``quantize``, ``info`` (``show``), ``bench``,
``tokens``, ``cost``, ``decide``.

Exit codes follow the kind of failure, never the message text:
0 ok, 1 other smolgen error, 2 bad argument, 3 model not found, 4 malformed model file,
5 unsupported model, 6 context length exceeded, 7 download failed, 8 an endpoint check failed,
9 the address to serve at is taken, 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

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


#: Where the documentation site is published (`.github/workflows/docs.yml`).
DOCS_URL = "https://smolgen.github.io/smolgen/"

#: The page that explains each command; the others are in the command-line reference.
DOCS_PAGES = {
    "generate": "walkthroughs/peek/",
    "peek": "walkthroughs/peek/",
    "sweep": "walkthroughs/sampling/",
    "chat": "",
    "serve": "walkthroughs/switching/",
    "check": "walkthroughs/check/",
    "batch": "scaling/",
    "bench": "benchmarks/",
    "tokens": "walkthroughs/cost/",
    "cost": "walkthroughs/cost/",
    "decide": "walkthroughs/cost/",
}


def docs_link(command: str) -> str:
    """The address of the page that explains ``command``."""
    page = DOCS_PAGES.get(command, f"reference/cli/#smolgen-{command}")
    return DOCS_URL + page


def build_parser() -> argparse.ArgumentParser:
    from ..lab.cli import cost, decide, tokens
    from . import (
        batch,
        bench,
        chat,
        check,
        generate,
        info,
        models,
        peek,
        pull,
        quantize,
        serve,
        sweep,
    )

    parser = ForgivingParser(
        prog="smolgen",
        description="Run SmolLM2 locally, fast, with the lid off.",
        epilog=f"docs: {DOCS_URL}",
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
        models,
        quantize,
        info,
        bench,
        tokens,
        cost,
        decide,
    ):
        module.register(sub)
    for name, command in sub.choices.items():
        if command.epilog and "docs: " in command.epilog:
            continue  # an alias of a command already linked
        link = f"docs: {docs_link(name)}"
        command.epilog = f"{command.epilog}\n\n{link}" if command.epilog else link
    return parser


def _version() -> str:
    from .. import __version__

    return f"smolgen {__version__}"


class ForgivingParser(argparse.ArgumentParser):
    """argparse's parser, suggesting the nearest choice for a mistyped command or value."""

    def error(self, message: str) -> NoReturn:
        match = re.search(r"invalid choice: '?([^' ]*)'? \(choose from (.*)\)", message)
        if match:
            choices = [c.strip("'\" ") for c in match.group(2).split(",")]
            message += did_you_mean(match.group(1), choices)
        super().error(message)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean --temperature?)`` for the candidate nearest ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def option_hint(arg: str, options: list[str]) -> str:
    """The nearest of a command's long ``options`` to a mistyped ``arg``; for a short flag the
    command does not take (``-t`` means temperature everywhere), its one long option of that
    initial (``--tokenizer``)."""
    flag = arg.split("=", 1)[0]
    if len(flag) == 2 and flag[1] != "-":
        same_initial = [o for o in options if o[2:3] == flag[1]]
        return f" (did you mean {same_initial[0]}?)" if len(same_initial) == 1 else ""
    return did_you_mean(flag, options)


def command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` were parsed by: the one whose options apply."""
    while True:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subparsers[0].dest, None) if subparsers else None
        if chosen is None:
            return parser
        parser = subparsers[0].choices[chosen]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    given = getattr(args, "model_argument", None)
    if given is not None:
        if args.model is not None and args.model != given:
            command_parser(parser, args).error("the model is given twice: as MODEL and --model")
        args.model = given
    if unknown:
        # argparse's own error, with the nearest option of the command for a mistyped one.
        command = command_parser(parser, args)
        options = [o for o in command._option_string_actions if o.startswith("--")]
        hints = "".join(option_hint(arg, options) for arg in unknown if arg.startswith("-"))
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hints}")
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
    parser.add_argument("-m", "--model", default=None, help=help_text)
    if positional:
        # Commands about one model (info, bench) also take it as their argument.
        parser.add_argument("model_argument", nargs="?", metavar="MODEL", help="as --model")
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

    if args.threads is not None:
        from ..bench import available_cpus

        cores = available_cpus()
        if args.threads > cores:
            # Each step waits for its slowest thread; threads beyond the cores wait for a core.
            print(
                f"smolgen: warning: --threads {args.threads} is more than the {cores} cores "
                "this process can use; the extra threads slow every step down (fewer run "
                "faster)",
                file=sys.stderr,
            )
    return load(
        args.model,
        device=args.device,
        dtype=args.dtype,
        quantize=args.quantize,
        threads=args.threads,
        **options,
    )


def require_extra(feature: str, extra: str, module: str) -> None:
    """Refuses ``feature`` before any work (a model loaded, a reply generated) when the optional
    ``extra`` it needs is not installed, with the command that installs it."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise errors.InvalidArgumentError(
            f"{feature} needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'smolgen[{extra}]'"
        ) from None


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
