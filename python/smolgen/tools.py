"""Tool calls in SmolLM2-Instruct's published function-calling format: the tools described in
the system prompt, the model's calls written as ``<tool_call>[{"name": ..., "arguments": {...}},
...]</tool_call>``, a tool's result given back as ``<tool_response>...</tool_response>`` in a
user turn. The reply is constrained by a grammar built from the tools' JSON Schemas, so a call
always parses and its arguments always match their schema.

``tool_choice`` is what OpenAI's and Anthropic's APIs take: ``"auto"`` (the model answers in
text or calls tools, choosing with its first token), ``"required"`` (at least one call), a
tool's name (exactly one call of it), ``"none"`` (the tools are not shown). ``parallel=False``
allows one call at most.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _core
from .errors import InvalidArgumentError

# The published prompt, word for word, but for what to do when no tool is needed: the format's
# empty list would leave an empty reply, so "auto" lets the model answer in text instead.
TOOLS_PROMPT = """\
You are an expert in composing functions. You are given a question and a set of possible functions.
Based on the question, you will need to make one or more function/tool calls to achieve the purpose.
If none of the functions can be used, point it out and refuse to answer.
If the given question lacks the parameters required by the function, also point it out.
You have access to the following tools:
<tools>{tools}</tools>
The output MUST strictly adhere to the following format, and NO other text MUST be included.
The example format is as follows. Please make sure the parameter type is correct. {no_call}
<tool_call>[
{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},
(more tool calls as required)
]</tool_call>"""
NO_CALL = {
    "auto": "If no function call is needed, answer in plain text instead.",
    "required": "At least one function call is needed.",
}

CALLS_START = "<tool_call>["
CALLS_END = "]</tool_call>"

#: How the core lays out JSON for a schema given alone; a `%json` schema in a Lark grammar
#: carries it itself.
JSON_LAYOUT = json.loads(_core.json_layout())

#: The most tools one request may describe: each adds a branch to every call's grammar.
MAX_TOOLS = 128


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]

    def described(self) -> dict[str, Any]:
        """As the prompt lists it."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: the tool's name and its arguments."""

    name: str
    arguments: dict[str, Any]


def tool(name: Any, description: Any, parameters: Any, where: str) -> Tool:
    """A tool as a request gives it, checked."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise InvalidArgumentError(
            f"{where}: a tool needs a name of 1 to 64 characters", param="tools"
        )
    if description is not None and not isinstance(description, str):
        raise InvalidArgumentError(f"{where}: a tool's description must be a string", param="tools")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise InvalidArgumentError(
            f"{where}: a tool's parameters must be a JSON Schema object", param="tools"
        )
    return Tool(name, description or "", parameters)


def openai_tools(tools: Iterable[Any], param: str = "tools") -> list[Tool]:
    """OpenAI's ``tools``: ``{"type": "function", "function": {name, description,
    parameters}}`` (a :class:`Tool` is taken as it is)."""
    out = []
    for i, t in enumerate(tools):
        if isinstance(t, Tool):
            out.append(t)
            continue
        where = f"{param}[{i}]"
        f = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(t, Mapping) or t.get("type") != "function" or not isinstance(f, Mapping):
            raise InvalidArgumentError(
                f"{where}: only function tools are supported: "
                '{"type": "function", "function": {...}}',
                param=param,
            )
        out.append(tool(f.get("name"), f.get("description"), f.get("parameters"), where))
    return checked(out, param)


def anthropic_tools(tools: Iterable[Any], param: str = "tools") -> list[Tool]:
    """Anthropic's ``tools``: ``{name, description, input_schema}`` (client tools; the
    server-side ones, which have a ``type``, are not run here)."""
    out = []
    for i, t in enumerate(tools):
        where = f"{param}[{i}]"
        if not isinstance(t, Mapping) or t.get("type") not in (None, "custom"):
            kind = t.get("type") if isinstance(t, Mapping) else type(t).__name__
            raise InvalidArgumentError(
                f"{where}: only client tools (name, description, input_schema) are supported, "
                f"not {kind!r}",
                param=param,
            )
        out.append(tool(t.get("name"), t.get("description"), t.get("input_schema"), where))
    return checked(out, param)


def checked(tools: list[Tool], param: str) -> list[Tool]:
    if len(tools) > MAX_TOOLS:
        raise InvalidArgumentError(f"{param}: at most {MAX_TOOLS} tools", param=param)
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"{param}: two tools have the same name", param=param)
    return tools


def system_prompt(tools: Sequence[Tool], choice: str) -> str:
    """The system message that describes ``tools`` in the published format."""
    listed = json.dumps([t.described() for t in tools], ensure_ascii=False)
    return TOOLS_PROMPT.format(
        tools=listed, no_call=NO_CALL["auto" if choice == "auto" else "required"]
    )


def with_tools(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Tool], choice: str
) -> list[dict[str, Any]]:
    """``messages`` with the tools' system prompt first; a system message of the caller's
    follows it, in the same system turn."""
    out = [dict(m) for m in messages]
    prompt = system_prompt(tools, choice)
    if out and out[0].get("role") in ("system", "developer"):
        from .chat import message_text

        own = message_text(out[0].get("content"), "messages[0]")
        out[0] = {"role": "system", "content": f"{prompt}\n\n{own}" if own else prompt}
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out


def calls_text(calls: Iterable[ToolCall]) -> str:
    """Calls as the model writes them: an assistant turn of a conversation."""
    body = ",\n".join(
        json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False) for c in calls
    )
    return f"{CALLS_START}\n{body}\n{CALLS_END}"


def result_text(content: str) -> str:
    """A tool's result as the model reads it: a user turn."""
    return f"<tool_response>\n{content}\n</tool_response>"


def grammar(tools: Sequence[Tool], choice: str, parallel: bool = True) -> str:
    """The Lark grammar of a reply under ``choice``: calls whose names and arguments match the
    tools, or (``"auto"``) plain text that does not start like a call."""
    if choice == "none":
        raise InvalidArgumentError("tool_choice 'none' constrains nothing")
    allowed = [t for t in tools if choice in ("auto", "required") or t.name == choice]
    if not allowed:
        raise InvalidArgumentError(
            f"tool_choice: no tool named {choice!r} is given", param="tool_choice"
        )
    rules = []
    for i, t in enumerate(allowed):
        schema = {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
            "x-guidance": JSON_LAYOUT,  # as generate(json_schema=...) lays JSON out
        }
        rules.append(f"call_{i}: %json {json.dumps(schema, ensure_ascii=False)}")
    call = " | ".join(f"call_{i}" for i in range(len(allowed)))
    # A named tool is called once; otherwise as many calls as the model makes, unless not
    # parallel.
    more = ' (",\\n" call)*' if parallel and choice in ("auto", "required") else ""
    lines = [
        "start: calls" + (" | answer" if choice == "auto" else ""),
        f'calls: "{CALLS_START}\\n" call{more} "\\n{CALLS_END}"',
        f"call: {call}",
        *rules,
    ]
    if choice == "auto":
        # Any text that does not open with "<": the first token decides between the two.
        lines.append(r"answer: /[^<][\s\S]*/")
    return "\n".join(lines)


def parse_tool_calls(text: str) -> list[ToolCall] | None:
    """The calls in a reply written under :func:`grammar`, or ``None`` for a plain answer (or
    calls that ``max_tokens`` cut short, which do not parse)."""
    if not (text.startswith(CALLS_START) and text.endswith(CALLS_END)):
        return None
    try:
        listed = json.loads(text[len(CALLS_START) - 1 : len(text) - len(CALLS_END) + 1])
    except ValueError:
        return None
    if not isinstance(listed, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and isinstance(c.get("arguments"), dict)
        for c in listed
    ):
        return None
    return [ToolCall(c["name"], c["arguments"]) for c in listed]


def may_be_calls(text: str) -> bool:
    """Whether a reply that begins with ``text`` may be calls (its start is a prefix of
    ``<tool_call>[`` or the other way round): a stream holds such text back."""
    return CALLS_START.startswith(text) or text.startswith(CALLS_START)


def openai_messages(messages: Iterable[Any]) -> list[Any]:
    """OpenAI's tool turns as the model reads them: an assistant message's ``tool_calls`` as
    the calls' text, a ``tool`` message's result as a user turn. Other messages are left as they
    are (``normalize_messages`` checks them)."""
    from .chat import message_text

    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        return messages  # type: ignore[return-value]  # normalize_messages says what is wrong
    out: list[Any] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            out.append(m)
        elif m.get("role") == "tool":
            out.append(
                {"role": "user", "content": result_text(message_text(m.get("content"), where))}
            )
        elif m.get("role") == "assistant" and m.get("tool_calls"):
            text = message_text(m.get("content") or "", where)
            calls = calls_text(openai_call(c, f"{where}.tool_calls[{j}]")
                               for j, c in enumerate(m["tool_calls"]))  # fmt: skip
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
        else:
            out.append(m)
    return out


def openai_call(call: Any, where: str) -> ToolCall:
    """A call of an assistant message's ``tool_calls``: its arguments are JSON text."""
    f = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(f, Mapping) or not isinstance(f.get("name"), str):
        raise InvalidArgumentError(f"{where}: a tool call needs a function with a name")
    try:
        arguments = json.loads(f.get("arguments") or "{}")
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{where}.function.arguments: not JSON: {e}") from e
    if not isinstance(arguments, dict):
        raise InvalidArgumentError(f"{where}.function.arguments: must be a JSON object")
    return ToolCall(f["name"], arguments)
