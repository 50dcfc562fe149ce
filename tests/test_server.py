"""`smolgen serve` driven by the official `openai` and `anthropic` clients, unchanged but for
their base URL: shapes, streaming, logprobs, stops, seeds, errors, concurrency, hang-ups."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
try:  # the HTTP client the official clients are built on (httpx2 in their newest releases)
    import httpx2 as httpx
except ImportError:
    import httpx

KEY = "test-key"
MODEL = "smollm2-135m-instruct"
README = Path(__file__).resolve().parent.parent / "README.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``smolgen serve`` in its own process, as a user starts it; the API key is the one given
    here (none: no key), whatever the environment says."""

    def __init__(
        self,
        gguf: Path,
        *extra: str,
        key: str | None = KEY,
        port: int | None = None,
        model_id: str = MODEL,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "smolgen", "serve", "-m", str(gguf)]
        args += ["--model-id", model_id, "--port", str(self.port), "--log-level", "warning"]
        args += ["--api-key", key] if key else []
        env = {k: v for k, v in os.environ.items() if k != "SMOLGEN_API_KEY"}
        self.process = subprocess.Popen(
            [*args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5).json()

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


# The `server` (with room for 4 requests at once and 8 waiting), `client` and `claude` fixtures
# are in conftest.py.


HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]


# --- OpenAI: chat -----------------------------------------------------------------------------


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_a_request_without_sampling_settings_gets_the_servers_defaults(client, smollm2):
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, seed=11)
    local = smollm2.chat(HELLO, max_tokens=16, temperature=0.7, top_p=0.9, seed=11)
    assert reply.choices[0].message.content == local.text
    # The defaults are not the APIs' 1.0 and 1 (so the equality above tells them apart).
    assert smollm2.chat(HELLO, max_tokens=16, temperature=1.0, seed=11).text != local.text
    explicit = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=16, seed=11, temperature=1.0, top_p=1.0
    )
    assert explicit.choices[0].message.content != local.text  # a request's own value wins


def test_chat_completion_is_the_local_models_answer(client, smollm2):
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=20, temperature=0
    )
    local = smollm2.chat(HELLO, max_tokens=20, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == MODEL and reply.created > 0
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == local.text
    assert choice.finish_reason == local.finish_reason
    assert reply.usage.prompt_tokens == local.usage.prompt_tokens
    assert reply.usage.completion_tokens == local.usage.completion_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_is_the_same_text_and_ends_with_usage(client):
    whole = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=20, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == "length"
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 20
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_logprobs_have_openais_shape(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert bytes(item.bytes).decode("utf-8", "replace") == item.token or "\\x" in item.token
        # Greedy: the chosen token is the likeliest.
        assert item.top_logprobs[0].token == item.token
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    tokens = [
        lp.token
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for lp in c.choices[0].logprobs.content
    ]
    assert tokens == [item.token for item in content]


def test_stop_ends_before_the_stop_string(client):
    ask = {"model": MODEL, "messages": HELLO, "max_tokens": 60, "temperature": 0}
    free = client.chat.completions.create(**ask).choices[0].message.content
    # Without the stops the same greedy answer runs past one of them, so the cut is real.
    cuts = [free.find(s) for s in (" the", ".") if s in free]
    assert cuts, free
    reply = client.chat.completions.create(**ask, stop=[" the", "."])
    text = reply.choices[0].message.content
    assert text == free[: min(cuts)]
    assert " the" not in text and "." not in text
    assert reply.choices[0].finish_reason == "stop"


def test_a_seed_reproduces_a_sampled_answer_and_n_gives_distinct_choices(client):
    def ask(seed, n=1):
        return client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=16, temperature=1.0, seed=seed, n=n
        )

    a, b, c = ask(42), ask(42), ask(43)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content != c.choices[0].message.content
    several = ask(42, n=3)
    assert [ch.index for ch in several.choices] == [0, 1, 2]
    texts = [ch.message.content for ch in several.choices]
    assert texts[0] == a.choices[0].message.content  # choice 0 uses the seed itself
    assert len(set(texts)) > 1
    assert 3 <= several.usage.completion_tokens <= 3 * 16


def test_extra_body_knobs_and_unknown_fields_are_accepted(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_completion_tokens=5,
        temperature=0.7,
        seed=1,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"2": -100},
        user="someone",
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "not_a_field": [1]},
    )
    assert reply.usage.completion_tokens == 5


def test_the_prefix_cache_shows_in_usage(client):
    system = {"role": "system", "content": "You are a patient teacher of geography. " * 30}
    ask = lambda q: client.chat.completions.create(  # noqa: E731
        model=MODEL, messages=[system, {"role": "user", "content": q}], max_tokens=4, temperature=0
    )
    ask("Name a river.")
    second = ask("Name a lake.")
    assert second.usage.prompt_tokens_details.cached_tokens > 200


# --- OpenAI: completions ----------------------------------------------------------------------


def test_streamed_and_whole_completions_report_the_same_usage(client):
    """The streamed and the whole answer are built from the same events: the usage of one is
    the usage of the other, cached prompt tokens included."""
    prompt = "The lighthouse keeper wrote in his log every night. " * 20
    ask = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "temperature": 0}
    client.completions.create(**ask)  # leaves the prompt in the prefix cache
    whole = client.completions.create(**ask).usage
    chunks = list(
        client.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    )
    streamed = chunks[-1].usage
    assert whole.prompt_tokens_details.cached_tokens > 100
    assert streamed.model_dump() == whole.model_dump()


def test_completions_take_strings_lists_and_token_ids(client, smollm2):
    one = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0
    )
    assert one.object == "text_completion" and one.choices[0].text
    local = smollm2.generate("Once upon a time", max_tokens=8, temperature=0)
    assert one.choices[0].text == local.text
    ids = smollm2.tokenize("Once upon a time")
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == local.text
    two = client.completions.create(
        model=MODEL, prompt=["Once upon a time", "The sea"], max_tokens=4, temperature=0, n=2
    )
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    assert two.choices[0].text == two.choices[1].text  # greedy: both choices agree
    assert two.usage.prompt_tokens == len(ids) + len(smollm2.tokenize("The sea"))


def test_completions_echo_and_logprobs(client):
    reply = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=4, temperature=0, echo=True, logprobs=2
    )
    choice = reply.choices[0]
    assert choice.text.startswith("Once upon a time")
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert all(len(t) == 2 for t in lp.top_logprobs[1:])
    streamed = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=4, temperature=0, stream=True
    )
    text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert "Once upon a time" + text == choice.text


# --- errors -----------------------------------------------------------------------------------


def error_body(exc) -> dict:
    return exc.response.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"top_logprobs": 30, "logprobs": True}, "top_logprobs"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"999999": 1}}, None),
    ],
)
def test_bad_requests_are_400_in_openais_shape(client, kwargs, param):
    request = {"model": MODEL, "messages": HELLO, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**request)
    assert e.value.status_code == 400
    body = error_body(e.value)
    assert body["type"] == "invalid_request_error" and body["message"]
    assert set(body) == {"message", "type", "param", "code"}
    if param:
        assert body["param"] == param


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tools": [{"type": "web_search"}]}, "tools"),  # only function tools
        ({"tool_choice": "required"}, "tool_choice"),  # without tools
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true, as OpenAI refuses it
    ],
)
def test_what_the_server_does_not_do_is_a_400_naming_it(client, kwargs, param):
    """Never a 200 that quietly ignores a field the answer depends on."""
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2, **kwargs)
    body = error_body(e.value)
    assert body["param"] == param and re.match(rf"{param}(\[\d+\])?: ", body["message"])


def test_the_same_fields_asking_for_plain_text_are_answered(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=2,
        response_format={"type": "text"},
        tool_choice="none",
        modalities=["text"],
    )
    assert reply.choices[0].message.content


@pytest.mark.parametrize(
    ("kwargs", "param"), [({"suffix": " and then?"}, "suffix"), ({"best_of": 3}, "best_of")]
)
def test_completions_refuse_insertion_and_best_of(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="Once", max_tokens=2, **kwargs)
    assert error_body(e.value)["param"] == param


def test_too_long_is_context_length_exceeded(client, smollm2):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 9000}], max_tokens=10
        )
    body = error_body(e.value)
    assert body["code"] == "context_length_exceeded" and body["param"] == "messages"
    assert "maximum context length is 8192 tokens" in body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8192)
    assert error_body(e.value)["code"] == "context_length_exceeded"


def test_a_missing_or_wrong_key_is_401(server):
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.models.list()
    assert error_body(e.value)["code"] == "invalid_api_key"
    r = httpx.get(f"{server.url}/v1/models")  # no key at all
    assert r.status_code == 401 and r.json()["error"]["message"] == "No API key provided."
    assert httpx.get(f"{server.url}/health").status_code == 200  # health needs no key


def test_an_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=2)
    assert error_body(e.value)["code"] == "model_not_found"


def test_bad_json_and_unknown_routes_keep_the_error_shape(server):
    auth = {"authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b"{nope", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{server.url}/v1/nothing-here", headers=auth)
    assert r.status_code == 404 and "error" in r.json()
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/models"} <= set(
        doc["paths"]
    )


def test_a_full_queue_is_503_and_529(smollm2_gguf):
    server = Server(smollm2_gguf, "--max-concurrent", "1", "--max-queue", "0")
    try:
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        busy = c.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=2000, logit_bias={"2": -100}, stream=True
        )
        next(iter(busy))  # the only slot is taken
        with pytest.raises(openai.InternalServerError) as e:
            c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        assert e.value.status_code == 503 and error_body(e.value)["code"] == "overloaded"
        assert e.value.response.headers["retry-after"] == "1"
        claude = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as e:
            claude.messages.create(model=MODEL, messages=HELLO, max_tokens=2)
        assert e.value.status_code == 529
        assert e.value.response.json()["error"]["type"] == "overloaded_error"
        busy.close()
        assert server.health()["requests"]["refused"] == 2
    finally:
        server.stop()


def test_statuses_come_from_exception_classes_not_their_text(caplog):
    from smolgen import errors
    from smolgen.server.errors import api_error

    same = "retry later: prompt is too long, invalid value"
    context = errors.ContextLengthExceededError(
        same, max_context=8, prompt_tokens=6, max_tokens=4, requested=10
    )
    assert (api_error(context).status, api_error(context).code) == (
        400,
        "context_length_exceeded",
    )
    assert api_error(context).anthropic_body()["error"]["message"] == (
        "prompt is too long: 6 tokens + 4 max_tokens > 8 maximum"
    )
    bad = api_error(errors.InvalidArgumentError(same, param="top_p"))
    assert (bad.status, bad.param) == (400, "top_p")
    busy = api_error(errors.OverloadedError(same))
    assert (busy.status, busy.anthropic_status(), busy.retry_after) == (503, 529, 1)
    with caplog.at_level(logging.ERROR, logger="smolgen.server"):
        bug = api_error(errors.InternalError(same))
    assert bug.status == 500 and same not in bug.message


def test_a_bug_is_a_logged_500_that_leaks_nothing(smollm2, caplog, monkeypatch):
    """In process, with a model that fails: the client sees a generic 500 in OpenAI's shape;
    the traceback goes to the server's log."""
    import asyncio

    from smolgen.server import create_app

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(smollm2, "generate", broken)
    app = create_app(smollm2, MODEL)

    async def call():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        http = httpx.AsyncClient(transport=transport, base_url="http://test")
        c = openai.AsyncOpenAI(
            base_url="http://test/v1", api_key="x", http_client=http, max_retries=0
        )
        with pytest.raises(openai.InternalServerError) as e:
            await c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        await http.aclose()
        return e.value

    with caplog.at_level(logging.ERROR, logger="smolgen.server"):
        error = asyncio.run(call())
    assert error.status_code == 500
    body = error_body(error)
    assert body["type"] == "server_error" and "secret" not in json.dumps(body)
    assert "secret internal detail" in caplog.text


def test_a_refused_request_creates_no_generation(smollm2):
    """Admission comes first: a request the full server refuses never creates its generation
    (no prefix-cache copy for a 503)."""
    import asyncio

    from smolgen.server import create_app

    created = []

    class Counting:
        """The model, counting the generations created."""

        def __getattr__(self, name):
            return getattr(smollm2, name)

        def generate(self, *args, **kwargs):
            created.append(kwargs.get("max_tokens"))
            return smollm2.generate(*args, **kwargs)

    app = create_app(Counting(), MODEL, max_concurrent=1, max_queue=0)
    requests = [
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 2}),
        ("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 2}),
        ("/v1/messages", {"model": MODEL, "messages": HELLO, "max_tokens": 2}),
    ]

    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            held = app.state.scheduler.admit()  # the only place is taken
            refused = [(await http.post(path, json=body)).status_code for path, body in requests]
            held.release()
            served = (await http.post(*requests[0][:1], json=requests[0][1])).status_code
        return refused, served

    refused, served = asyncio.run(call())
    assert refused == [503, 503, 529]
    assert created == [2]  # only the request served once the place was free
    assert served == 200
    assert app.state.scheduler.counters.refused == 3


# --- several clients --------------------------------------------------------------------------


def test_four_concurrent_streams_each_get_their_own_answer(client, server):
    """Four clients at once are stepped together (batched into shared forward passes) and each
    gets exactly the answer it gets alone."""
    prompts = ["the sea", "a mountain", "a city at night", "an old tree"]

    def ask(subject, stream):
        messages = [{"role": "user", "content": f"Write about {subject}."}]
        kwargs = {"model": MODEL, "messages": messages, "max_tokens": 160, "temperature": 0.8}
        kwargs["seed"] = len(subject)
        kwargs["logit_bias"] = {"2": -100}  # no early end: the four overlap for a while
        if not stream:
            return client.chat.completions.create(**kwargs).choices[0].message.content
        return "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(stream=True, **kwargs)
            if c.choices
        )

    expected = {p: ask(p, stream=False) for p in prompts}
    before = server.health()["batching"]
    results: dict[str, str] = {}
    busiest: list[int] = [0]
    health_latency: list[float] = []

    def worker(p):
        results[p] = ask(p, stream=True)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        t0 = time.perf_counter()
        snapshot = server.health()
        health_latency.append(time.perf_counter() - t0)
        busiest[0] = max(busiest[0], snapshot["requests"]["running"])
        time.sleep(0.02)
    for t in threads:
        t.join(timeout=300)
    assert results == expected
    # The event loop kept answering while four generations ran, and their steps were shared.
    assert busiest[0] >= 2
    assert max(health_latency) < 2.0
    after = server.health()["batching"]
    steps, tokens = after["steps"] - before["steps"], after["tokens"] - before["tokens"]
    assert tokens == 4 * 160
    assert steps < 0.5 * tokens, (steps, tokens)  # on average more than two per step


def test_a_client_that_hangs_up_stops_its_generation(client, server):
    before = server.health()["requests"]["cancelled"]
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=4000, logit_bias={"2": -100}, stream=True
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = server.health()["requests"]
        if state["cancelled"] > before and state["running"] == 0:
            break
        time.sleep(0.1)
    assert state["cancelled"] == before + 1 and state["running"] == 0, server.health()


def test_a_hang_up_is_logged_as_one_not_as_an_error(smollm2_gguf):
    """A client that leaves before a whole (unstreamed) answer: the generation stops and the
    log says so, without an error or a traceback."""
    s = Server(smollm2_gguf, "--log-level", "info", key=None)
    try:
        body = json.dumps(
            {"model": MODEL, "messages": HELLO, "max_tokens": 4000, "logit_bias": {"2": -100}}
        ).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: local\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(head.encode() + body)
            deadline = time.monotonic() + 30
            while s.health()["requests"]["running"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = s.health()["requests"]
            if state["cancelled"] == 1 and state["running"] == 0:
                break
            time.sleep(0.1)
        assert state["cancelled"] == 1 and state["running"] == 0, state
    finally:
        log = s.stop()
    assert "client went away: generation stopped" in log
    assert "Traceback" not in log and "internal error" not in log and "ERROR" not in log, log


def test_a_taken_port_fails_at_once_with_its_own_exit_status(smollm2_gguf):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "smolgen", "serve", "-m", smollm2_gguf, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 9, run.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr and "--port" in run.stderr
    assert "serving" not in run.stderr  # refused before the model was loaded


def test_ps_lists_the_servers_running(smollm2_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLGEN_HOME", str(tmp_path))

    def ps() -> list[dict]:
        run = subprocess.run(
            [sys.executable, "-m", "smolgen", "ps", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(run.stdout)

    assert ps() == []
    s = Server(smollm2_gguf, key=None)
    try:
        (listed,) = ps()
        assert listed["pid"] == s.process.pid and listed["url"] == s.url
        assert listed["model"] == MODEL and listed["path"] == str(smollm2_gguf)
        assert listed["requests"]["running"] == 0 and listed["uptime_s"] >= 0
    finally:
        s.stop()
    assert ps() == []
    # A record left by a server that was killed is dropped when the list is read.
    stale = tmp_path / "run" / "serve-999999999.json"
    stale.write_text(json.dumps({"pid": 999999999, "url": "x", "model": "m", "started": 0}))
    assert ps() == [] and not stale.exists()


# --- Anthropic ----------------------------------------------------------------------------------

# The newest client no longer has a temperature argument; the API (and this server) still
# take the field.
GREEDY = {"temperature": 0}


def test_anthropic_messages_shape(claude, smollm2):
    reply = claude.messages.create(
        model=MODEL,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
        max_tokens=12,
        extra_body=GREEDY,
    )
    local = smollm2.chat(
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."},
        ],
        max_tokens=12,
        temperature=0,
    )
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.content[0].type == "text" and reply.content[0].text == local.text
    assert reply.stop_reason == {"stop": "end_turn", "length": "max_tokens"}[local.finish_reason]
    assert reply.usage.output_tokens == local.usage.completion_tokens
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) == (
        local.usage.prompt_tokens
    )
    count = claude.messages.count_tokens(
        model=MODEL,
        system="You are terse.",
        messages=[{"role": "user", "content": "Name a colour."}],
    )
    assert count.input_tokens == local.usage.prompt_tokens


def test_anthropic_streaming_events(claude):
    kwargs = {"model": MODEL, "messages": HELLO, "max_tokens": 16, "extra_body": GREEDY}
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == 16
    events = [e.type for e in claude.messages.create(stream=True, **kwargs)]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events[-2] == "message_delta" and "content_block_delta" in events
    assert events.index("content_block_start") < events.index("content_block_stop")


def test_anthropic_stop_sequences(claude):
    reply = claude.messages.create(
        model=MODEL, messages=HELLO, max_tokens=60, stop_sequences=["."], extra_body=GREEDY
    )
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == "."
    assert "." not in reply.content[0].text


def test_anthropic_errors(claude, server):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="claude-no-such-model", messages=HELLO, max_tokens=4)
    assert e.value.response.json()["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 9000}], max_tokens=4
        )
    assert "prompt is too long" in e.value.response.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model=MODEL, messages=[{"role": "system", "content": "x"}], max_tokens=4
        )
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model=MODEL, messages=HELLO, max_tokens=4, extra_body={"temperature": 1.5}
        )
    r = httpx.post(
        f"{server.url}/v1/messages",
        json={"model": MODEL, "messages": HELLO},
        headers={"x-api-key": KEY},
    )
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    bad = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert e.value.response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "auto"}}, "tool_choice"),  # without tools
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ],
)
def test_anthropic_refuses_server_tools_and_thinking_by_name(claude, kwargs, field):
    for call in (claude.messages.create, claude.messages.count_tokens):
        extra = {"max_tokens": 4} if call == claude.messages.create else {}
        with pytest.raises(anthropic.BadRequestError) as e:
            call(model=MODEL, messages=HELLO, extra_body=kwargs, **extra)
        assert e.value.response.json()["error"]["message"].startswith(f"{field}: ")


def test_a_final_assistant_message_is_continued_in_both_apis(client, claude, smollm2):
    """Anthropic's prefill, and OpenAI's with vLLM's `continue_final_message`: the reply goes on
    from the assistant's words and holds only what comes after them."""
    messages = [
        {"role": "user", "content": "Tell me about Paris."},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    local = smollm2.chat(messages, continue_final_message=True, max_tokens=8, temperature=0)
    reply = claude.messages.create(model=MODEL, messages=messages, max_tokens=8, extra_body=GREEDY)
    assert reply.content[0].text == local.text
    prompt_tokens = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    assert prompt_tokens == local.usage.prompt_tokens
    counted = claude.messages.count_tokens(model=MODEL, messages=messages)
    assert counted.input_tokens == local.usage.prompt_tokens
    chat = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=8,
        temperature=0,
        extra_body={"continue_final_message": True},
    )
    assert chat.choices[0].message.content == local.text
    with pytest.raises(anthropic.BadRequestError, match="trailing whitespace"):
        claude.messages.create(
            model=MODEL,
            messages=[messages[0], {"role": "assistant", "content": "Paris is "}],
            max_tokens=4,
        )
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=4, extra_body={"continue_final_message": True}
        )
    assert error_body(e.value)["param"] == "messages"


# --- the README's curl examples -------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_examples_work_as_written(smollm2_gguf):
    """Each curl block of the README, run against a server without a key on the port it names
    (8000), gives a 200 with the shape its API promises."""
    text = README.read_text()
    commands = [
        block.replace("\\\n", " ")
        for block in re.findall(r"```(?:bash|sh|console)\n(curl .*?)```", text, re.S)
    ]
    assert len(commands) >= 3
    if not _port_free(8000):
        pytest.skip("port 8000 is taken on this machine")
    server = Server(smollm2_gguf, key=None, port=8000)
    try:
        for command in commands:
            result = subprocess.run(
                command,
                shell=True,
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "SMOLGEN_API_KEY": ""},
            )
            assert result.returncode == 0, (command, result.stderr)
            out = result.stdout.strip()
            assert out and "error" not in out.split("\n", 1)[0], (command, out)
            if out.startswith("{"):
                json.loads(out)
            else:
                assert out.startswith(("data:", "event:")), out
    finally:
        server.stop()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
