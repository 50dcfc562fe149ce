"""``smolgen chat``: a conversation in the terminal that streams, keeps its history, and shows
the tokens used against the context window."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ..chat import CHAT_TEMPERATURE, CHAT_TOP_P
from ..errors import SmolgenError
from . import add_sampling_arguments, model_argument, sampling_options

COMMANDS = "/reset forgets the conversation, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "chat",
        help="chat with the model in the terminal",
        description="A multi-turn conversation through the model's own chat template. Each "
        "turn reuses the keys and values of the earlier ones (prefix cache), so only the new "
        f"message is prefilled. {COMMANDS}.",
    )
    model_argument(p)
    p.add_argument("--system", default=None, help="a system message to start with")
    # A chat answers with some variety and little repetition, up to 512 tokens per reply.
    add_sampling_arguments(
        p,
        max_tokens=512,
        temperature=CHAT_TEMPERATURE,
        top_p=CHAT_TOP_P,
        repetition_penalty=1.1,
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no status line after replies")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import load_model

    model = load_model(args)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"smolgen chat with {model.info['path']} ({COMMANDS})", file=sys.stderr)
    session = ChatSession(model, args)
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            print("\n[/exit or Ctrl-D leaves]", file=sys.stderr)
            continue
        if not line:
            break
        text = line.rstrip("\n")
        if text.strip() in ("/exit", "/quit"):
            break
        if text.strip() == "/reset":
            session.reset()
            print("[conversation forgotten]", file=sys.stderr)
            continue
        if not text.strip():
            continue
        session.reply(text, sys.stdout)
    return 0


class ChatSession:
    """The history of one conversation, trimmed to the context window when it has to be."""

    def __init__(self, model, args: argparse.Namespace) -> None:
        self.model = model
        self.args = args
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, str]] = []
        if self.args.system:
            self.messages.append({"role": "system", "content": self.args.system})

    def reply(self, text: str, out: TextIO) -> None:
        """Answers ``text`` on ``out``. A message that cannot be answered (too long for the
        context window, say) is refused and forgotten, and Ctrl-C stops a reply where it is:
        either way the conversation goes on."""
        from ..chat import trim_messages

        args = self.args
        self.messages.append({"role": "user", "content": text})
        try:
            trimmed = trim_messages(self.messages, self.model, args.max_tokens)
            stream = self.model.chat(trimmed.messages, stream=True, **sampling_options(args))
        except SmolgenError as e:
            self.messages.pop()
            print(f"[not sent: {e}]", file=sys.stderr)
            return
        except KeyboardInterrupt:
            self.messages.pop()
            print("\n[stopped]", file=sys.stderr)
            return
        if trimmed.dropped:
            print(
                f"[dropped the {trimmed.dropped} oldest messages to fit the context window]",
                file=sys.stderr,
            )
            self.messages = trimmed.messages
        said: list[str] = []
        try:
            for chunk in stream:
                said.append(chunk.text)
                out.write(chunk.text)
                out.flush()
        except KeyboardInterrupt:
            stream.close()
            out.write("\n")
            out.flush()
            # What was shown stays the assistant's turn, as far as it went.
            if said:
                self.messages.append({"role": "assistant", "content": "".join(said)})
            else:
                self.messages.pop()
            print("[stopped]", file=sys.stderr)
            return
        out.write("\n")
        out.flush()
        done = stream.completion
        if done is None:
            return
        self.messages.append({"role": "assistant", "content": done.text})
        if not args.quiet:
            u, t = done.usage, done.timings
            print(
                f"[context {u.total_tokens}/{self.model.context_length} tokens | this turn: "
                f"{u.prompt_tokens - u.cached_tokens} prefilled, {u.cached_tokens} reused, "
                f"{u.completion_tokens} generated | TTFT {t.ttft_s * 1000:.0f} ms | "
                f"{t.decode_tokens_per_s:.1f} tok/s]",
                file=sys.stderr,
            )
