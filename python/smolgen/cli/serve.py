"""``smolgen serve``: the model behind OpenAI- and Anthropic-compatible HTTP endpoints."""

from __future__ import annotations

import argparse
import copy
import os
import socket
import sys
from errno import EADDRINUSE

from ..chat import CHAT_TEMPERATURE, CHAT_TOP_P
from ..errors import InvalidArgumentError
from ..limits import MAX_REQUEST_BYTES
from ..running import recorded_server
from . import model_argument

#: The exit status when the address to serve at cannot be listened on (its port is taken).
EXIT_ADDRESS_UNAVAILABLE = 9


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the model over an OpenAI- and Anthropic-compatible HTTP API",
        description="Serve the model at /v1/chat/completions, /v1/completions, /v1/messages "
        "and /v1/models, with /health and the OpenAPI document at /docs. Clients of OpenAI's "
        "or Anthropic's API only change their base URL.",
    )
    model_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default: 8000")
    p.add_argument(
        "--api-key",
        default=os.environ.get("SMOLGEN_API_KEY"),
        help="require this key (Authorization: Bearer KEY or x-api-key: KEY); "
        "default: $SMOLGEN_API_KEY, else none",
    )
    p.add_argument(
        "--model-id",
        default=None,
        help="the name clients use in 'model' (default: the alias, or the file's name)",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=4,
        help="generations running at once (default: 4)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=32,
        help="requests waiting for a slot before new ones get 503 (default: 32)",
    )
    p.add_argument(
        "--max-tokens-default",
        type=int,
        default=512,
        help="max_tokens of a request that gives none (or null), capped by what the context "
        "window has left; a request's own max_tokens wins (default: 512)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=CHAT_TEMPERATURE,
        help="temperature of a request that gives none, 0 to 2 (default: "
        f"{CHAT_TEMPERATURE}; OpenAI's and Anthropic's APIs use 1.0, at which a small "
        "model rambles)",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=CHAT_TOP_P,
        help=f"top_p of a request that gives none, in (0, 1] (default: {CHAT_TOP_P})",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_REQUEST_BYTES,
        help="largest request body; a larger one gets 413 before it is read "
        f"(default: {MAX_REQUEST_BYTES}, {MAX_REQUEST_BYTES // 2**20} MiB)",
    )
    p.add_argument(
        "--prefix-cache-mb",
        type=float,
        default=256,
        help="memory for reusing earlier prompts' keys and values; 0 disables (default: 256)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import require_extra

    # The extra, checked before any work, as every command checks its own.
    for module in ("uvicorn", "fastapi", "fastapi_offline"):
        require_extra("smolgen serve", "serve", module)
    if (
        min(args.max_concurrent, args.max_tokens_default, args.max_body_bytes) < 1
        or args.max_queue < 0
        or args.prefix_cache_mb < 0
    ):
        raise InvalidArgumentError(
            "--max-concurrent, --max-tokens-default and --max-body-bytes must be >= 1, "
            "--max-queue and --prefix-cache-mb >= 0"
        )
    if not (0 <= args.temperature <= 2 and 0 < args.top_p <= 1):
        raise InvalidArgumentError("--temperature must be from 0 to 2 and --top-p in (0, 1]")
    # The address first: a port another process holds fails at once, not after the model
    # has loaded, and with its own exit status.
    try:
        listener = listening_socket(args.host, args.port)
    except OSError as e:
        hint = " (another server holds it? --port picks another)" if e.errno == EADDRINUSE else ""
        print(
            f"smolgen: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}{hint}",
            file=sys.stderr,
        )
        return EXIT_ADDRESS_UNAVAILABLE
    with listener:
        return serve(args, listener)


def serve(args: argparse.Namespace, listener: socket.socket) -> int:
    """Loads the model and serves it on ``listener`` until the server is stopped."""
    import uvicorn

    from ..hub import DEFAULT_MODEL
    from ..server import create_app
    from . import load_model

    model = load_model(args, prefix_cache_bytes=int(args.prefix_cache_mb * 2**20))
    spec = args.model or DEFAULT_MODEL
    model_id = args.model_id or served_name(spec)
    aliases = tuple({spec, served_name(spec)} - {model_id})
    app = create_app(
        model,
        model_id,
        aliases=aliases,
        api_key=args.api_key,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        max_tokens_default=args.max_tokens_default,
        max_body_bytes=args.max_body_bytes,
        temperature=args.temperature,
        top_p=args.top_p,
    )
    # The port the system chose for --port 0; a wildcard address as a client would name it.
    host = {"0.0.0.0": "localhost", "::": "localhost"}.get(args.host, args.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{listener.getsockname()[1]}"
    print(
        f"smolgen: serving {model_id} at {url}/v1 "
        f"({'API key required' if args.api_key else 'no API key'})",
        file=sys.stderr,
        flush=True,
    )
    # The server's own lines (hang-ups, bugs) go where uvicorn's go, at the same level.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["smolgen"] = {
        "handlers": ["default"],
        "level": args.log_level.upper(),
        "propagate": False,
    }
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, log_config=log_config
    )
    with recorded_server(url, model_id, model.info["path"]):
        uvicorn.Server(config).run(sockets=[listener])
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (as uvicorn binds one), for the server to accept
    on. Raises :class:`OSError` when the address is taken or not this machine's."""
    if not 0 <= port <= 65535:
        raise InvalidArgumentError(f"--port must be from 0 to 65535, got {port}")
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def served_name(spec: str) -> str:
    """``smollm2-135m-instruct`` for the alias, ``SmolLM2-135M-Instruct.Q4_1`` for a file."""
    base = os.path.basename(os.path.normpath(spec))
    return base[: -len(".gguf")] if base.endswith(".gguf") else base
