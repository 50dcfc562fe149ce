"""Chat messages to the prompt a model was trained on, and keeping a conversation inside the
context window.

The prompt comes from the model's own chat template (Jinja, as Hugging Face ships it), rendered in
a sandbox (:mod:`smolgen.sandbox`): a template may format the messages and nothing else. Attribute
access to Python internals, writes to the messages, a render past its deadline (one second unless
``time_limit`` or ``$SMOLGEN_TEMPLATE_TIME_LIMIT`` says otherwise) and building more than its size
budget are refused with :class:`ChatTemplateError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from . import _core, sandbox
from .errors import ChatTemplateError, InvalidArgumentError

if TYPE_CHECKING:
    from .model import Model

#: How a conversation samples where nothing else is said: with some variety, not at the hosted
#: APIs' 1.0 and 1, at which a small model rambles (``smolgen chat``, and ``smolgen serve`` for
#: a request that gives no temperature or top_p).
CHAT_TEMPERATURE = 0.7
CHAT_TOP_P = 0.9

ROLES = ("system", "user", "assistant")
# OpenAI's newer name for the system role.
ROLE_ALIASES = {"developer": "system"}

# A rendered prompt longer than this is a template gone wrong, not a conversation.
MAX_RENDERED_CHARS = sandbox.MAX_VALUE


def normalize_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Messages as a chat template expects them: ``{"role", "content"}`` with text content.

    ``developer`` becomes ``system``; content may be a string or a list of
    ``{"type": "text", "text": ...}`` parts (joined). Anything else is an
    :class:`InvalidArgumentError` naming the message.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise InvalidArgumentError("messages must be a list of {'role': ..., 'content': ...}")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidArgumentError(f"{where} must be an object with 'role' and 'content'")
        role = message.get("role")
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        if role not in ROLES:
            raise InvalidArgumentError(
                f"{where}.role must be one of system, developer, user, assistant; got {role!r}",
                param=f"{where}.role",
            )
        out.append({"role": role, "content": message_text(message.get("content"), where)})
    if not out:
        raise InvalidArgumentError("messages must hold at least one message", param="messages")
    return out


def message_text(content: Any, where: str = "message") -> str:
    """The text of a message's content: a string, or text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise InvalidArgumentError(
                    f"{where}.content[{j}] has type {kind!r}: only text parts are supported",
                    param=f"{where}.content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidArgumentError(
                    f"{where}.content[{j}].text must be a string", param=f"{where}.content"
                )
            texts.append(text)
        return "".join(texts)
    raise InvalidArgumentError(
        f"{where}.content must be a string or a list of text parts", param=f"{where}.content"
    )


class ChatTemplate:
    """A Jinja chat template, compiled once in a sandbox that allows formatting only.

    Each render must finish within ``time_limit`` seconds (by default
    ``$SMOLGEN_TEMPLATE_TIME_LIMIT``, else one) and stay inside a size budget on what it builds;
    see :mod:`smolgen.sandbox`.
    """

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        time_limit: float | None = None,
    ) -> None:
        import jinja2

        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.time_limit = (
            sandbox.default_time_limit()
            if time_limit is None
            else sandbox.checked_time_limit(time_limit)
        )
        # The settings Hugging Face renders templates with, so prompts match theirs exactly.
        env = sandbox.TemplateSandbox(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols"],
            undefined=jinja2.Undefined,
        )
        try:
            sandbox.check_source(env, source)
            # Jinja folds constant filters while it compiles: they run under a budget too.
            with sandbox.budget_scope(sandbox.Budget(self.time_limit)):
                self._template = env.from_string(source)
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the chat template does not compile: {e}") from None
        except (RecursionError, SyntaxError) as e:
            raise ChatTemplateError(
                f"the chat template does not compile: it nests too deeply ({type(e).__name__})"
            ) from None
        except MemoryError:
            raise ChatTemplateError("the chat template does not compile: out of memory") from None

    def render(
        self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt for ``messages`` (normalized first), ending with the assistant's turn
        opening when ``add_generation_prompt``."""
        import jinja2
        from jinja2.exceptions import SecurityError

        normalized = normalize_messages(messages)
        budget = sandbox.Budget(self.time_limit, (normalized, self.bos_token, self.eos_token))
        parts: list[str] = []
        size = 0
        try:
            with sandbox.budget_scope(budget):
                for piece in self._template.generate(
                    messages=normalized,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                ):
                    size += len(piece)
                    if size > MAX_RENDERED_CHARS:
                        raise ChatTemplateError(
                            "the chat template produced more than "
                            f"{MAX_RENDERED_CHARS:,} characters"
                        )
                    parts.append(piece)
        except SecurityError as e:
            raise ChatTemplateError(
                f"the chat template tried something other than formatting: {e}"
            ) from None
        except sandbox.TemplateRaised as e:
            raise InvalidArgumentError(f"the chat template rejected the messages: {e}") from None
        except (ChatTemplateError, InvalidArgumentError):
            raise
        except RecursionError:
            raise ChatTemplateError(
                "the chat template recursed too deeply (a macro or a recursive loop calling "
                "itself without end?)"
            ) from None
        except MemoryError:
            raise ChatTemplateError("the chat template ran out of memory") from None
        except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as e:
            raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {e}") from None
        return "".join(parts)


@lru_cache(maxsize=8)
def _compiled(source: str, bos_token: str, eos_token: str, time_limit: float) -> ChatTemplate:
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token, time_limit=time_limit)


def chat_template(model: Model) -> ChatTemplate:
    """The model's own chat template (from the GGUF, ``tokenizer_config.json`` or
    ``chat_template.jinja``), compiled once."""
    tokenizer = model.tokenizer
    source = tokenizer.chat_template
    if not source:
        raise ChatTemplateError(
            f"{model.info['path']} has no chat template: use generate() with a plain prompt"
        )

    def piece(token_id: int | None) -> str:
        return "" if token_id is None else tokenizer.piece(token_id).text

    limit = sandbox.default_time_limit()
    return _compiled(source, piece(tokenizer.bos_id), piece(tokenizer.eos_id), limit)


def chat_prompt_ids(
    model: Model,
    messages: Iterable[Mapping[str, Any]],
    *,
    bounded: bool = True,
    continue_final_message: bool = False,
) -> list[int]:
    """The token ids of ``messages`` rendered for a reply: what the model reads. ``bounded``:
    a rendered prompt too long for any tokenization of it to fit the context window is refused
    before it is tokenized (:meth:`Model.check_prompt_length`); without it, any length is
    counted. ``continue_final_message``: the reply goes on from the last message, the start of
    the assistant's answer (:func:`continued_prompt`)."""
    template = chat_template(model)
    if continue_final_message:
        prompt = continued_prompt(template, messages)
    else:
        prompt = template.render(messages, add_generation_prompt=True)
    if bounded:
        model.check_prompt_length(prompt, "messages")
    # The template writes special tokens as text (<|im_start|>): parse them as special.
    return model.tokenize(prompt, special=True)


def continued_prompt(template: ChatTemplate, messages: Iterable[Mapping[str, Any]]) -> str:
    """The prompt that has the model go on writing the last message, the start of the
    assistant's answer (a "prefill": Anthropic's final assistant message, vLLM's and
    transformers' ``continue_final_message``): the conversation as the template renders it, cut
    right after that message's text, before the end of its turn. An empty final message is a
    plain reply to the ones before it."""
    normalized = normalize_messages(messages)
    final = normalized[-1]
    if final["role"] != "assistant":
        raise InvalidArgumentError(
            f"messages[{len(normalized) - 1}]: only an assistant message can be continued, "
            f"got role {final['role']!r}",
            param="messages",
        )
    if not final["content"]:
        if len(normalized) == 1:
            raise InvalidArgumentError(
                "messages: an empty assistant message alone leaves nothing to reply to",
                param="messages",
            )
        return template.render(normalized[:-1], add_generation_prompt=True)
    rendered = template.render(normalized, add_generation_prompt=False)
    end = rendered.rfind(final["content"])
    if end < 0:
        raise ChatTemplateError(
            "the chat template does not write the final message's text as given, so the reply "
            "cannot continue it"
        )
    return rendered[: end + len(final["content"])]


def check_context(
    model: Model, prompt_tokens: int, max_tokens: int | None, context_length: int | None = None
) -> None:
    """Raises :class:`ContextLengthExceededError` in the words API users know when the messages,
    with ``max_tokens`` of answer (at least one token when unset), do not fit. The check and its
    wording are the core's, the same as ``generate``'s."""
    window = model.context_length if context_length is None else context_length
    _core.check_context(window, prompt_tokens, max_tokens, "messages")


@dataclass(frozen=True)
class TrimmedMessages:
    """What :func:`trim_messages` kept: the messages, how many it dropped, and the prompt's size
    in tokens against the budget (the context window less ``max_tokens``)."""

    messages: list[dict[str, str]]
    dropped: int
    prompt_tokens: int
    budget: int


def trim_messages(
    messages: Iterable[Mapping[str, Any]],
    model: Model,
    max_tokens: int,
    *,
    context_length: int | None = None,
) -> TrimmedMessages:
    """Keeps the system message(s) and the most recent turns whose prompt, counted with the
    model's tokenizer and chat template, leaves ``max_tokens`` for the answer inside the context
    window (``context_length`` to aim for a smaller one).

    The oldest turns go first; the kept conversation starts with a user message. Raises
    :class:`ContextLengthExceededError` when even the system message and the newest message do
    not fit.
    """
    if max_tokens < 0:
        raise InvalidArgumentError(f"max_tokens must be >= 0, got {max_tokens}")
    normalized = normalize_messages(messages)
    window = model.context_length if context_length is None else context_length
    budget = window - max_tokens
    system = [m for m in normalized if m["role"] == "system"]
    turns = [m for m in normalized if m["role"] != "system"]

    def kept(start: int) -> list[dict[str, str]]:
        rest = turns[start:]
        # A conversation the model reads should not open with an answer to nothing.
        while len(rest) > 1 and rest[0]["role"] == "assistant":
            rest = rest[1:]
        return system + rest

    sizes: dict[int, int] = {}

    def size(start: int) -> int:  # rendering and tokenizing is the cost: once per start
        if start not in sizes:
            sizes[start] = len(chat_prompt_ids(model, kept(start), bounded=False))
        return sizes[start]

    # Fewer turns never make a longer prompt: find the smallest start that fits by bisection.
    last = max(len(turns) - 1, 0)
    # Even the system message and the newest message must leave max_tokens (or one) free.
    check_context(model, size(last), max_tokens or None, context_length=window)
    lo, hi = 0, last
    while lo < hi:
        mid = (lo + hi) // 2
        if size(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    result = kept(lo)
    return TrimmedMessages(
        messages=result,
        dropped=len(normalized) - len(result),
        prompt_tokens=size(lo),
        budget=budget,
    )


__all__ = [
    "ChatTemplate",
    "TrimmedMessages",
    "chat_prompt_ids",
    "chat_template",
    "check_context",
    "normalize_messages",
    "trim_messages",
]
