"""Structured output: a JSON Schema, a regular expression or a Lark grammar constrains what the
model generates, from Python (`generate(json_schema=...)`) and through the server with the
official clients (OpenAI's `response_format` and `parse`, Anthropic's `output_config`, vLLM's
`guided_*` fields). Every reply must parse and match, whatever the prompt."""

from __future__ import annotations

import json
import re
import time

import pytest

import smolgen
from smolgen.errors import InvalidArgumentError

jsonschema = pytest.importorskip("jsonschema")

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}

# Twenty requests unlike each other: what the prompt asks for and what the schema allows differ
# in kind (enums, bounds, arrays, nesting, optional keys, unions, patterns, any object).
VARIED = [
    ("Give a person's name and age.", PERSON),
    (
        "Is the sky green?",
        {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]},
    ),
    ("Pick a colour.", {"enum": ["red", "green", "blue"]}),
    (
        "Rate this film from 1 to 5: 'A dull, endless film.'",
        {
            "type": "object",
            "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["stars"],
        },
    ),
    (
        "List three fruits.",
        {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "minItems": 3,
            "maxItems": 3,
        },
    ),
    (
        "Describe a book: title, author and year.",
        {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "author": {"type": "string"},
                "year": {"type": "integer"},
            },
            "required": ["title", "author", "year"],
        },
    ),
    (
        "What is 2 + 2?",
        {"type": "object", "properties": {"result": {"type": "number"}}, "required": ["result"]},
    ),
    (
        "Classify the sentiment of: 'I love this phone!'",
        {
            "type": "object",
            "properties": {
                "sentiment": {"enum": ["positive", "negative", "neutral"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["sentiment", "confidence"],
        },
    ),
    (
        "Give me a recipe with its ingredients.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "ingredients": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "item": {"type": "string"},
                            "grams": {"type": "integer", "minimum": 0},
                        },
                        "required": ["item", "grams"],
                    },
                    "minItems": 1,
                    "maxItems": 4,
                },
            },
            "required": ["name", "ingredients"],
        },
    ),
    (
        "Write a haiku.",
        {
            "type": "object",
            "properties": {
                "lines": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 40},
                    "minItems": 3,
                    "maxItems": 3,
                }
            },
            "required": ["lines"],
        },
    ),
    (
        "Extract the date from: 'We met on 4 July 2021.'",
        {
            "type": "object",
            "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
            "required": ["date"],
        },
    ),
    (
        "Describe a cat.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "lives": {"type": "integer", "minimum": 1, "maximum": 9},
                "colours": {
                    "type": "array",
                    "items": {"enum": ["black", "white", "ginger", "grey"]},
                    "maxItems": 3,
                },
            },
            "required": ["name", "lives", "colours"],
        },
    ),
    (
        "Name a city and its country.",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "country": {"type": "string"},
                "population": {"type": "integer"},
            },
            "required": ["city", "country"],
        },
    ),
    ("Say hello.", {"type": "string", "maxLength": 30}),
    (
        "Give a point in 2D.",
        {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        },
    ),
    (
        "Is this spam? 'WIN A FREE CRUISE NOW'",
        {
            "type": "object",
            "properties": {
                "spam": {"type": "boolean"},
                "reason": {"type": "string", "maxLength": 80},
            },
            "required": ["spam", "reason"],
        },
    ),
    (
        "Give a number or say none.",
        {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 1000}, {"type": "null"}]},
    ),
    (
        "Describe a user with an address.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "address": {
                    "type": "object",
                    "properties": {
                        "street": {"type": "string"},
                        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                    },
                    "required": ["street", "zip"],
                },
            },
            "required": ["name", "address"],
        },
    ),
    (
        "Translate 'cat' to French.",
        {
            "type": "object",
            "properties": {"translation": {"type": "string", "minLength": 1, "maxLength": 20}},
            "required": ["translation"],
        },
    ),
    (
        "Give three prime numbers.",
        {"type": "array", "items": {"type": "integer", "minimum": 2}, "minItems": 3, "maxItems": 3},
    ),
]


def closed(schema):
    """``schema`` with ``additionalProperties: false`` on every object that lists its
    properties, as OpenAI's strict mode requires (and its SDK's ``parse`` writes): an open object
    lets a 135M model add keys until ``max_tokens`` at temperature 0."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if "properties" in schema:
        out.setdefault("additionalProperties", False)
    return out


VARIED = [(prompt, closed(schema)) for prompt, schema in VARIED]


def chat(model: smolgen.Model, content: str) -> list[int]:
    return model.chat_prompt([{"role": "user", "content": content}])


# --- Python ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, None), (0.8, 11)])
def test_every_reply_to_varied_prompts_matches_its_schema(smollm2, temperature, seed):
    for prompt, schema in VARIED:
        done = smollm2.generate(
            chat(smollm2, prompt),
            json_schema=schema,
            temperature=temperature,
            seed=seed,
            max_tokens=200,
        )
        assert done.finish_reason == "stop", (prompt, done.text)
        jsonschema.validate(json.loads(done.text), schema)


def test_a_schema_may_be_given_as_json_text(smollm2):
    ids = chat(smollm2, "Give a person's name and age.")
    as_dict = smollm2.generate(ids, json_schema=PERSON, temperature=0)
    as_text = smollm2.generate(ids, json_schema=json.dumps(PERSON), temperature=0)
    assert as_dict.text == as_text.text
    jsonschema.validate(json.loads(as_dict.text), PERSON)


def test_json_is_laid_out_like_json_dumps(smollm2):
    """One space after ':' and ',' and nowhere else: a small model given free whitespace can
    write blank lines until max_tokens."""
    done = smollm2.generate(chat(smollm2, "Give a person."), json_schema=PERSON, temperature=0)
    value = json.loads(done.text)
    assert done.text == json.dumps(value)


@pytest.mark.parametrize(
    ("pattern", "prompt"),
    [
        (r"\d{4}-\d{2}-\d{2}", "What is the date of the first moon landing?"),
        (r"(yes|no)", "Is water wet?"),
        (r"[A-Z][a-z]{1,15} [A-Z][a-z]{1,15}", "Name a famous scientist."),
        (r"\+?[0-9]{1,3}( [0-9]{3}){3}", "Give a phone number."),
    ],
)
def test_regex_replies_match_the_whole_pattern(smollm2, pattern, prompt):
    for seed in (1, 2, 3):
        done = smollm2.generate(
            chat(smollm2, prompt), regex=pattern, temperature=1.0, seed=seed, max_tokens=40
        )
        assert done.finish_reason == "stop"
        assert re.fullmatch(pattern, done.text), done.text


def test_a_lark_grammar_constrains_the_reply(smollm2):
    grammar = r"""
        start: answer " because " reason
        answer: "yes" | "no"
        reason: /[a-z ]{1,40}/
    """
    for seed in range(3):
        done = smollm2.generate(
            chat(smollm2, "Should I bring an umbrella?"),
            grammar=grammar,
            temperature=0.7,
            seed=seed,
            max_tokens=40,
        )
        assert re.fullmatch(r"(yes|no) because [a-z ]{1,40}", done.text), done.text


def test_streaming_and_batching_give_the_same_constrained_reply(smollm2):
    ids = chat(smollm2, "Describe a book: title, author and year.")
    schema = VARIED[5][1]
    whole = smollm2.generate(ids, json_schema=schema, temperature=0)
    stream = smollm2.generate(ids, json_schema=schema, temperature=0, stream=True)
    assert "".join(chunk.text for chunk in stream) == whole.text
    # Two constrained and one free generation stepped together.
    streams = [
        smollm2.generate(ids, json_schema=schema, temperature=0, stream=True),
        smollm2.generate(ids, temperature=0, max_tokens=20, stream=True),
        smollm2.generate(ids, regex=r"[0-9]{3}", temperature=0, stream=True),
    ]
    texts = ["", "", ""]
    while any(s.completion is None for s in streams):
        for i, chunk in enumerate(smolgen.step_streams(streams)):
            if chunk is not None and not isinstance(chunk, Exception):
                texts[i] += chunk.text
            assert not isinstance(chunk, Exception), chunk
    assert texts[0] == whole.text
    assert texts[1] == smollm2.generate(ids, temperature=0, max_tokens=20).text
    assert re.fullmatch("[0-9]{3}", texts[2])


def test_the_constraints_cost_is_reported(smollm2):
    ids = chat(smollm2, "Give a person's name and age.")
    constrained = smollm2.generate(ids, json_schema=PERSON, temperature=0)
    free = smollm2.generate(ids, temperature=0, max_tokens=8)
    t = constrained.timings
    assert 0 < t.constraint_s < t.ttft_s + t.decode_s
    assert t.to_dict()["constraint_s"] == t.constraint_s
    assert free.timings.constraint_s == 0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"json_schema": "{"}, "json_schema: EOF while parsing"),
        ({"json_schema": {"type": "nope"}}, "json_schema: "),
        ({"json_schema": "[1, 2]"}, "json_schema: a JSON Schema must be a JSON object"),
        ({"json_schema": [1, 2]}, "json_schema must be a dict or its JSON text"),
        ({"json_schema": {"a": {1, 2}}}, "json_schema cannot be written as JSON"),
        ({"regex": "("}, "regex: "),
        ({"regex": 5}, "regex must be a string"),
        ({"grammar": "start: undefined_rule"}, "grammar: "),
        ({"regex": "a", "grammar": 'start: "b"'}, "cannot be combined"),
        ({"json_schema": {"type": "string", "minLength": 3, "maxLength": 2}}, "json_schema: "),
    ],
)
def test_a_bad_constraint_is_an_invalid_argument(smollm2, kwargs, words):
    with pytest.raises(InvalidArgumentError) as e:
        smollm2.generate("Hi", max_tokens=2, **kwargs)
    assert words in str(e.value)


def test_huge_or_pathological_constraints_are_refused_in_bounded_time(smollm2):
    """A schema or grammar over 64 KiB is refused before it is compiled (compiling some costs
    more than linear time); below that, llguidance's parser limits bound the compile and each
    token's mask. An error, never a hang or a crash."""
    wide = {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(20000)}}
    huge_lark = "start: " + " | ".join(f'"w{i}"' for i in range(100_000))
    for kwargs in ({"json_schema": wide}, {"grammar": huge_lark}):
        with pytest.raises(InvalidArgumentError, match="bytes is more than the 65536"):
            smollm2.generate("Hi", max_tokens=4, **kwargs)
    # Under the size limit, but beyond the parser's: 2,000 alternatives in one row at most.
    many = {"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(2000)}}
    branching = "start: " + " | ".join(f'"w{i}"' for i in range(5000))
    for kwargs in ({"json_schema": many}, {"grammar": branching}):
        t0 = time.perf_counter()
        with pytest.raises(InvalidArgumentError, match="max is 2000"):
            smollm2.generate("Hi", max_tokens=4, **kwargs)
        assert time.perf_counter() - t0 < 20
    # Nested repetitions compile to a lazy automaton, not an exponential one.
    t0 = time.perf_counter()
    done = smollm2.generate("Hi", max_tokens=8, temperature=0, regex="(a{1,1000}){1,1000}b")
    assert re.fullmatch("a*b?", done.text) and time.perf_counter() - t0 < 20


# --- through the server, with the official clients ------------------------------------------

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pydantic = pytest.importorskip("pydantic")
pytest.importorskip("fastapi")

# `server`, `client` and `claude` (conftest.py): the server and the official clients.
from test_server import MODEL, error_body  # noqa: E402


def ask(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def test_response_format_json_schema_matches_on_varied_prompts(client):
    """At the server's own sampling defaults, as an application calls it."""
    for i, (prompt, schema) in enumerate(VARIED):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=ask(prompt),
            max_tokens=200,
            seed=i,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": f"answer_{i}", "schema": schema, "strict": True},
            },
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", (prompt, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_the_openai_sdks_parse_fills_a_pydantic_model(client):
    class Book(pydantic.BaseModel):
        title: str
        author: str
        year: int

    reply = client.chat.completions.parse(
        model=MODEL, messages=ask("Describe a famous book."), response_format=Book, seed=1
    )
    book = reply.choices[0].message.parsed
    assert isinstance(book, Book) and book.title and book.author


def test_json_object_mode_and_streaming(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ask("Give a JSON object with a name and an age."),
        response_format={"type": "json_object"},
        max_tokens=200,
        seed=3,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance(json.loads(text), dict)


def test_vllms_guided_fields_constrain_completions_and_chats(client):
    done = client.completions.create(
        model=MODEL,
        prompt="The year the Berlin wall fell:",
        max_tokens=10,
        extra_body={"guided_regex": "[12][0-9]{3}"},
    )
    assert re.fullmatch("[12][0-9]{3}", done.choices[0].text)
    done = client.completions.create(
        model=MODEL,
        prompt="Answer yes or no. Is fire cold? Answer:",
        max_tokens=5,
        extra_body={"guided_grammar": 'start: " yes" | " no"'},
    )
    assert done.choices[0].text in (" yes", " no")
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ask("Give a person's name and age."),
        max_tokens=100,
        extra_body={"guided_json": json.dumps(VARIED[0][1])},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), VARIED[0][1])


def test_anthropic_output_format_in_both_spellings(claude):
    schema = VARIED[0][1]
    for fields in (
        {"output_config": {"format": {"type": "json_schema", "schema": schema}}},
        {"output_format": {"type": "json_schema", "schema": schema}},
    ):
        reply = claude.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=ask("Give a person's name and age."),
            extra_body=fields,
        )
        assert reply.stop_reason == "end_turn"
        jsonschema.validate(json.loads(reply.content[0].text), schema)


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        ({"response_format": {"type": "xml"}}, "response_format", "type 'xml'"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema object"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
            "response_format",
            "must be an object",
        ),
        (
            {"response_format": {"type": "json_object", "schema": {"type": "nope"}}},
            "response_format",
            "response_format: ",
        ),
        ({"extra_body": {"guided_regex": "("}}, "guided_regex", "guided_regex: "),
        ({"extra_body": {"guided_json": "{"}}, "guided_json", "not JSON"),
        (
            {"response_format": {"type": "json_object"}, "extra_body": {"guided_regex": "a"}},
            "guided_regex",
            "cannot be combined",
        ),
    ],
)
def test_a_bad_format_is_a_400_naming_its_field(client, kwargs, param, words):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ask("Hi"), max_tokens=2, **kwargs)
    body = error_body(e.value)
    assert body["param"] == param and words in body["message"], body


def test_anthropic_refuses_a_bad_output_format(claude):
    for fields in (
        {"output_config": {"format": {"type": "text"}}},
        {"output_format": {"type": "json_schema"}},
        {"output_format": {"type": "json_schema", "schema": {"type": "nope"}}},
    ):
        with pytest.raises(anthropic.BadRequestError) as e:
            claude.messages.create(model=MODEL, max_tokens=5, messages=ask("Hi"), extra_body=fields)
        assert e.value.body["error"]["type"] == "invalid_request_error"
