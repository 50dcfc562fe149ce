"""Tool calls in SmolLM2's function-calling format: from Python (`Model.chat(tools=...)`) and
through the server with the official OpenAI and Anthropic clients and LangChain. A call always
parses and its arguments match the tool's schema; `tool_choice` is honoured; a tool's result
goes back to the model; streamed calls arrive as each SDK assembles them."""

from __future__ import annotations

import json

import pytest

from smolgen import tools as tool_calls
from smolgen.errors import InvalidArgumentError

jsonschema = pytest.importorskip("jsonschema")

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "add", "description": "Add two numbers", "parameters": ADD},
    },
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


def check_calls(calls, names=SCHEMAS):
    assert calls, "no call"
    for call in calls:
        assert call.name in names
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


# --- the format -------------------------------------------------------------------------------


def test_calls_and_results_are_written_in_smollm2s_format():
    calls = [tool_calls.ToolCall("get_weather", {"city": "Paris"})]
    text = tool_calls.calls_text(calls)
    assert (
        text
        == '<tool_call>[\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n]</tool_call>'
    )
    assert tool_calls.parse_tool_calls(text) == calls
    assert tool_calls.result_text("18C") == "<tool_response>\n18C\n</tool_response>"
    for text in ("Paris is sunny.", "<tool_call>[", '<tool_call>[{"name": 1}]</tool_call>'):
        assert tool_calls.parse_tool_calls(text) is None
    assert tool_calls.may_be_calls("<too") and tool_calls.may_be_calls("<tool_call>[\n{")
    assert not tool_calls.may_be_calls("Paris") and not tool_calls.may_be_calls("<b>")


def test_openai_tool_turns_become_the_formats_turns():
    messages = tool_calls.openai_messages(
        [
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        ]
    )
    assert messages[1] == {
        "role": "assistant",
        "content": tool_calls.calls_text([tool_calls.ToolCall("get_weather", {"city": "Paris"})]),
    }
    assert messages[2] == {
        "role": "user",
        "content": "<tool_response>\n18C, sunny\n</tool_response>",
    }
    with pytest.raises(InvalidArgumentError, match="not JSON"):
        tool_calls.openai_messages(
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]
        )


def test_the_tools_are_described_before_the_callers_system_prompt():
    listed = tool_calls.openai_tools(TOOLS)
    messages = tool_calls.with_tools(
        [{"role": "system", "content": "Be terse."}, *ASK], listed, "auto"
    )
    system = messages[0]["content"]
    assert system.startswith("You are an expert in composing functions.")
    assert '"name": "get_weather"' in system and system.endswith("\n\nBe terse.")
    assert "answer in plain text instead" in system
    assert "At least one" in tool_calls.system_prompt(listed, "required")


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ([{"type": "code_interpreter"}], "only function tools"),
        ([{"type": "function", "function": {"name": ""}}], "name of 1 to 64"),
        ([{"type": "function", "function": {"name": "f", "parameters": 3}}], "JSON Schema"),
        ([TOOLS[0], TOOLS[0]], "same name"),
    ],
)
def test_bad_tools_are_invalid_arguments(given, words):
    with pytest.raises(InvalidArgumentError, match=words):
        tool_calls.openai_tools(given)


# --- Python -----------------------------------------------------------------------------------


def test_required_calls_parse_and_match_their_schemas(smollm2):
    for content in (
        "What's the weather in Paris?",
        "Add 2 and 40.",
        "Is it cold in Oslo in fahrenheit?",
        "Tell me a joke.",
    ):
        done = smollm2.chat(
            [{"role": "user", "content": content}],
            tools=TOOLS,
            tool_choice="required",
            temperature=0,
            max_tokens=100,
        )
        calls = tool_calls.parse_tool_calls(done.text)
        check_calls(calls)
        # Laid out as the format writes calls (the core's JSON layout, as for json_schema).
        assert done.text == tool_calls.calls_text(calls)


def test_a_named_tool_is_called_exactly_once(smollm2):
    for seed in range(3):
        done = smollm2.chat(
            ASK, tools=TOOLS, tool_choice="add", temperature=0.9, seed=seed, max_tokens=100
        )
        calls = tool_calls.parse_tool_calls(done.text)
        assert [c.name for c in calls] == ["add"]
        check_calls(calls)


def test_auto_lets_the_model_answer_in_text_and_none_hides_the_tools(smollm2):
    auto = smollm2.chat(
        [{"role": "user", "content": "Write one sentence about the sea."}],
        tools=TOOLS,
        temperature=0,
        max_tokens=30,
    )
    assert tool_calls.parse_tool_calls(auto.text) is None and auto.text
    plain = smollm2.chat(ASK, temperature=0, max_tokens=20)
    none = smollm2.chat(ASK, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=20)
    assert none.text == plain.text


def test_one_call_at_most_when_not_parallel(smollm2):
    done = smollm2.chat(
        [{"role": "user", "content": "Weather in Paris, Tokyo and Lima?"}],
        tools=TOOLS,
        tool_choice="get_weather",
        parallel_tool_calls=False,
        temperature=0,
    )
    assert len(tool_calls.parse_tool_calls(done.text)) == 1


def test_bad_tool_requests_from_python(smollm2):
    with pytest.raises(InvalidArgumentError, match="no tool named"):
        smollm2.chat(ASK, tools=TOOLS, tool_choice="missing")
    with pytest.raises(InvalidArgumentError, match="cannot be combined"):
        smollm2.chat(ASK, tools=TOOLS, json_schema={"type": "object"})
    # A constraint keyword left unset (None, as a caller passing every keyword does) is none.
    done = smollm2.chat(ASK, tools=TOOLS, tool_choice="add", json_schema=None, temperature=0)
    assert [c.name for c in tool_calls.parse_tool_calls(done.text)] == ["add"]


# --- through the server -----------------------------------------------------------------------

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("fastapi")

# `server`, `client` and `claude` (conftest.py): the server and the official clients.
from test_server import KEY, MODEL, error_body  # noqa: E402

ANTHROPIC_TOOLS = [
    {"name": t["function"]["name"], "description": t["function"]["description"],
     "input_schema": t["function"]["parameters"]}
    for t in TOOLS
]  # fmt: skip


def test_openai_tool_calls_whole_and_streamed(client):
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0)
    reply = client.chat.completions.create(**kwargs)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)

    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed = [t for d in deltas for t in d.tool_calls or []]
    assert [(t.function.name, t.function.arguments) for t in streamed] == [
        (call.function.name, call.function.arguments)
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(d.content for d in deltas)


def test_the_sdks_stream_helper_assembles_the_calls(client):
    with client.chat.completions.stream(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"]


def test_a_text_answer_under_auto_streams_as_text(client):
    kwargs = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        tools=TOOLS,
        temperature=0,
        max_tokens=24,
    )
    whole = client.chat.completions.create(**kwargs)
    assert whole.choices[0].message.tool_calls is None and whole.choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # streamed


def test_a_tool_result_goes_back_to_the_model(client):
    first = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
    )
    message = first.choices[0].message
    history = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18C and sunny"},
    ]
    reply = client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="none", max_tokens=30
    )
    assert reply.choices[0].message.content
    prompt = client.chat.completions.create(
        model=MODEL, messages=history, max_tokens=1, logprobs=True
    ).usage.prompt_tokens
    assert prompt > first.usage.prompt_tokens - 300  # the call and its result are in the prompt


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
         "tool_choice"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)  # fmt: skip
def test_bad_tool_requests_are_400s_naming_the_field(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, **kwargs)
    assert error_body(e.value)["param"] == param


def test_anthropic_tool_use_whole_and_streamed(claude):
    kwargs = dict(
        model=MODEL,
        max_tokens=100,
        messages=ASK,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any"},
        extra_body={"temperature": 0},
    )
    reply = claude.messages.create(**kwargs)
    assert reply.stop_reason == "tool_use"
    (block,) = reply.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER)

    with claude.messages.stream(**kwargs) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content] == [(block.name, block.input)]
    assert "input_json" in events and events[-1] == "message_stop"


def test_anthropic_tool_results_and_token_counts(claude):
    named = {"type": "tool", "name": "get_weather"}
    first = claude.messages.create(
        model=MODEL, max_tokens=100, messages=ASK, tools=ANTHROPIC_TOOLS, tool_choice=named
    )
    history = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": first.content[0].id, "content": "18C"}
            ],
        },
    ]
    reply = claude.messages.create(
        model=MODEL, max_tokens=20, messages=history, tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "none"},
    )  # fmt: skip
    assert reply.content[0].type == "text"
    plain = claude.messages.count_tokens(model=MODEL, messages=ASK).input_tokens
    with_tools = claude.messages.count_tokens(
        model=MODEL, messages=ASK, tools=ANTHROPIC_TOOLS
    ).input_tokens
    assert with_tools > plain + 100


def test_anthropic_refuses_bad_tool_requests(claude):
    for kwargs in (
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "tool"}},
        {"tool_choice": {"type": "any"}},
    ):
        with pytest.raises(anthropic.BadRequestError):
            claude.messages.create(model=MODEL, max_tokens=5, messages=ASK, **kwargs)


# --- LangChain --------------------------------------------------------------------------------


def test_langchain_structured_output_and_tools_round_trip(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from pydantic import BaseModel

    llm = langchain_openai.ChatOpenAI(
        base_url=f"{server.url}/v1", api_key=KEY, model=MODEL, temperature=0, max_retries=0
    )

    class Person(BaseModel):
        name: str
        age: int

    for method in ("json_schema", "function_calling", "json_mode"):
        person = llm.with_structured_output(Person, method=method).invoke(
            "Invent a person with a name and an age. Answer in JSON."
        )
        assert isinstance(person, Person)

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"18 degrees and sunny in {city}"

    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(
        "What's the weather in Paris?"
    )
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    history = [HumanMessage("What's the weather in Paris?"), message]
    history.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = llm.bind_tools([get_weather], tool_choice="none").invoke(history)
    assert final.content and not final.tool_calls
