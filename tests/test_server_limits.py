"""What the server takes and refuses at its edge: bounded request bodies (413 from the headers,
before the body is read), prompts too long for any tokenization refused without tokenizing,
bounded integers and valid Unicode in every field (400 naming it, never a 500), error responses
in the OpenAPI document, ``Allow`` on a 405, and a default cap on ``max_tokens``.

On the tiny random model, each test in well under a second, but the schema-driven requests
(300 of them, about ten seconds)."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
try:  # the HTTP client the official clients are built on (httpx2 in their newest releases)
    import httpx2 as httpx
except ImportError:
    import httpx

import smolgen
from test_server import Server

MODEL = "tiny"
END_TOKENS = {"0": -100, "1": -100, "2": -100}  # the tiny vocabulary's special tokens
HI = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def tiny(tiny_gguf: Path) -> smolgen.Model:
    return smolgen.load(tiny_gguf, prefix_cache_bytes=0, progress=False)


def make_app(model, **settings):
    from smolgen.server import create_app

    return create_app(model, MODEL, **settings)


def call(app, *requests: tuple[str, str, dict | bytes | None]) -> list:
    """Each ``(method, path, body)`` through the ASGI app in process, in order, on one event
    loop (a dict body is sent as JSON, bytes as they are)."""

    async def run():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            out = []
            for method, path, body in requests:
                kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
                out.append(await http.request(method, path, **kwargs))
            return out

    return asyncio.run(run())


# --- a server process, reached over plain sockets -------------------------------------------------


class Served(Server):
    """``smolgen serve`` on the tiny model in its own process, as a user starts it (no API key),
    reached over plain sockets."""

    def __init__(self, gguf: Path, *flags: str) -> None:
        super().__init__(gguf, *flags, key=None, model_id=MODEL)

    def connection(self) -> closing[http.client.HTTPConnection]:
        """A keep-alive connection, closed when its ``with`` block ends."""
        return closing(http.client.HTTPConnection("127.0.0.1", self.port, timeout=30))

    def memory_kib(self) -> dict[str, int]:
        """The process's resident memory now (VmRSS) and at its peak (VmHWM), in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


@pytest.fixture(scope="module")
def served(tiny_gguf):
    s = Served(tiny_gguf, "--max-tokens-default", "3")
    yield s
    log = s.stop()
    assert "Traceback" not in log, log


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response, response.read()


# --- 1. request bodies are bounded ------------------------------------------------------------


def test_a_body_over_the_limit_is_413_in_each_apis_shape(tiny):
    app = make_app(tiny, max_body_bytes=1000)
    padding = "x" * 1000
    chat, messages, fits = call(
        app,
        ("POST", "/v1/chat/completions", {"model": MODEL, "messages": HI, "user": padding}),
        ("POST", "/v1/messages", {"model": MODEL, "messages": HI, "max_tokens": 1, "x": padding}),
        ("POST", "/v1/chat/completions", {"model": MODEL, "messages": HI, "max_tokens": 1}),
    )
    assert chat.status_code == 413
    body = chat.json()["error"]
    assert body["type"] == "invalid_request_error" and body["code"] == "request_too_large"
    assert "1000 bytes" in body["message"] and set(body) == {"message", "type", "param", "code"}
    assert messages.status_code == 413
    assert messages.json()["type"] == "error"
    assert messages.json()["error"]["type"] == "request_too_large"
    assert fits.status_code == 200


def asgi_exchange(app, scope_headers: list[tuple[bytes, bytes]], chunks):
    """Drives the ASGI app by hand: the request's body arrives as ``chunks`` (endless if it is
    a generator); returns the response's status and headers, and how many chunks were read."""
    read = [0]
    sent: list[dict] = []

    async def receive():
        try:
            body = next(chunks)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        read[0] += 1
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *scope_headers],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body), read[0]


def endless(chunk: bytes):
    while True:
        yield chunk


def test_the_limit_is_read_from_content_length_before_the_body(tiny):
    app = make_app(tiny, max_body_bytes=1000)
    status, _, body, read = asgi_exchange(app, [(b"content-length", b"50000000")], endless(b"x"))
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert read == 0  # not one byte of the body was asked for


def test_a_chunked_body_is_cut_off_at_the_limit(tiny):
    app = make_app(tiny, max_body_bytes=1000)
    headers = [(b"transfer-encoding", b"chunked")]
    status, _, body, read = asgi_exchange(app, headers, endless(b"x" * 100))
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert read == 11  # the chunk that went past 1000 bytes is the last one read


def test_a_50_mb_body_is_refused_at_once_and_costs_no_memory(served):
    """The default limit (8 MiB) refuses a 50 MB prompt from its headers: the answer comes
    while the body is still being sent, and the server's memory does not grow."""
    before = served.memory_kib()
    body = b'{"model": "tiny", "prompt": "' + b"a" * 50_000_000 + b'"}'
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        head = (
            "POST /v1/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        s.sendall(head.encode() + body[:65536])  # the rest is never needed
        response = http.client.HTTPResponse(s)
        response.begin()
        data = response.read()
        elapsed = time.perf_counter() - t0
    after = served.memory_kib()
    assert response.status == 413, data
    error = json.loads(data)["error"]
    assert error["code"] == "request_too_large" and "8388608 bytes" in error["message"]
    assert elapsed < 2.0, elapsed
    assert after["VmHWM"] - before["VmHWM"] < 20 * 1024, (before, after)  # KiB
    print(f"\n50 MB body: 413 after {elapsed * 1000:.0f} ms; memory {before} -> {after} KiB")

    # The whole 50 MB, sent by an ordinary client, gets the same answer quickly.
    t0 = time.perf_counter()
    with served.connection() as conn:
        response, data = exchange(conn, "POST", "/v1/completions", body)
    elapsed = time.perf_counter() - t0
    assert response.status == 413 and json.loads(data)["error"]["code"] == "request_too_large"
    assert elapsed < 2.0, elapsed
    after = served.memory_kib()
    assert after["VmHWM"] - before["VmHWM"] < 20 * 1024, (before, after)
    print(f"sent whole: 413 after {elapsed * 1000:.0f} ms; memory {before} -> {after} KiB")


# --- 1b. a prompt too long for any tokenization is refused without tokenizing -----------------


def test_the_longest_token_bounds_the_tokens_of_a_text(tiny):
    tokenizer = tiny.tokenizer
    longest = max(len(tokenizer.piece(i).bytes) for i in range(tokenizer.vocab_size))
    assert tiny.longest_token_bytes == longest == len("<|endoftext|>")
    # A text of the longest token, one token per 13 bytes: the tightest case, refused only
    # when it cannot fit.
    window = tiny.context_length
    fits = "<|endoftext|>" * (window - 1)
    assert len(tiny.tokenize(fits, special=True)) == window - 1
    tiny.check_prompt_length(fits)
    with pytest.raises(smolgen.errors.ContextLengthExceededError) as e:
        tiny.check_prompt_length(fits + "<|endoftext|>")
    assert e.value.prompt_tokens == window and e.value.max_context == window
    assert "at least" in str(e.value)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "a" * 50_000, "max_tokens": 1}),
        ("/v1/completions", {"prompt": ["hi", "a" * 50_000], "max_tokens": 1}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a" * 50_000}]}),
        (
            "/v1/messages",
            {"messages": [{"role": "user", "content": "a" * 50_000}], "max_tokens": 1},
        ),
    ],
)
def test_a_prompt_too_long_for_any_tokenization_is_refused_without_tokenizing(
    tiny, monkeypatch, path, body
):
    tokenized: list[int] = []
    real_tokenize, real_encode = smolgen.Model.tokenize, smolgen.Tokenizer.encode_prompt

    def tokenize(self, text, special=False):
        tokenized.append(len(text))
        return real_tokenize(self, text, special)

    def encode_prompt(self, text):
        tokenized.append(len(text))
        return real_encode(self, text)

    monkeypatch.setattr(smolgen.Model, "tokenize", tokenize)
    monkeypatch.setattr(smolgen.Tokenizer, "encode_prompt", encode_prompt)
    (r,) = call(make_app(tiny), ("POST", path, {"model": MODEL, **body}))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    if path == "/v1/messages":
        assert error["message"].startswith("prompt is too long: at least")
    else:
        assert error["code"] == "context_length_exceeded"
    assert all(n < 1000 for n in tokenized), tokenized  # the long text was never tokenized


HUGE = "a" * 20_000_000  # 20 MB: seconds to tokenize, refused in microseconds


@pytest.mark.parametrize(
    "entry",
    [
        lambda m, text: m.generate(text, max_tokens=1),
        lambda m, text: m.generate(text, max_tokens=1, stream=True),
        lambda m, text: m.logits(text),
        lambda m, text: m.logits(text, positions="all"),
        lambda m, text: m.attention(text),
        lambda m, text: m.peek(text),
        lambda m, text: m.score(text),
        lambda m, text: m.check_prompt_length(text),
    ],
    ids=[
        "generate",
        "generate-stream",
        "logits",
        "logits-all",
        "attention",
        "peek",
        "score",
        "check_prompt_length",
    ],
)
def test_python_entry_points_refuse_a_text_too_long_for_any_tokenization(tiny, entry):
    # at_least is set only by the refusal from the text's length: had the text been tokenized,
    # the error would carry its exact count instead.
    with pytest.raises(smolgen.errors.ContextLengthExceededError) as e:
        entry(tiny, HUGE)
    assert e.value.at_least and e.value.max_context == tiny.context_length
    assert e.value.prompt_tokens >= len(HUGE) // tiny.longest_token_bytes
    assert f"({len(HUGE)} bytes) is at least" in str(e.value)


def test_a_text_prompt_is_refused_by_its_bytes_only_when_it_cannot_fit(tiny):
    # The longest token over and over: the one text whose every token is as long as the bound
    # assumes. Window - 1 of them plus BOS (when the model adds one) fill the window exactly.
    window = tiny.context_length
    bos = len(tiny.tokenizer.encode_prompt(""))
    edge = "<|endoftext|>" * (window - bos)
    assert len(tiny.logits(edge, positions="all")) == window
    for too_long in (lambda: tiny.generate(edge, max_tokens=1), lambda: tiny.logits(edge + "x")):
        with pytest.raises(smolgen.errors.ContextLengthExceededError) as e:
            too_long()
        assert e.value.at_least
    # Short tokens pass the bound and are judged on their exact count once tokenized.
    short = "\n" * (window + 5)
    with pytest.raises(smolgen.errors.ContextLengthExceededError) as e:
        tiny.logits(short)
    assert not e.value.at_least
    assert e.value.prompt_tokens == len(tiny.tokenizer.encode_prompt(short))


# --- 3. bounded integers and valid Unicode: a 400 that names the field, never a 500 -------------

CHAT = '"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1'
TEXT = '"model": "tiny", "prompt": "hi", "max_tokens": 1'
CLAUDE = '"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1'
BAD = [
    ("/v1/chat/completions", CHAT + ', "top_k": 18446744073709551616', "top_k"),
    (
        "/v1/chat/completions",
        CHAT + ', "logit_bias": {"100000000000000000000000": 1}',
        "logit_bias",
    ),
    ("/v1/chat/completions", CHAT + ', "logit_bias": {"-1": 1}', "logit_bias"),
    ("/v1/chat/completions", CHAT + ', "logit_bias": {"4000": 1}', "logit_bias"),
    ("/v1/chat/completions", CHAT + ', "seed": -1', "seed"),
    ("/v1/chat/completions", CHAT + ', "seed": 18446744073709551616', "seed"),
    ("/v1/chat/completions", CHAT + ', "n": 18446744073709551616', "n"),
    (
        "/v1/chat/completions",
        CHAT + ', "max_completion_tokens": 18446744073709551616',
        "max_completion_tokens",
    ),
    ("/v1/chat/completions", CHAT + ', "top_logprobs": 18446744073709551616', "top_logprobs"),
    ("/v1/chat/completions", CHAT + ', "stop": ["\\ud800"]', "stop.0"),
    ("/v1/chat/completions", CHAT + ', "user": "\\udfff"', "user"),
    ("/v1/chat/completions", '"model": "tiny\\ud800", "messages": []', "model"),
    (
        "/v1/chat/completions",
        '"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800"}]',
        "messages.0.content",
    ),
    (
        "/v1/chat/completions",
        '"model": "tiny", "messages": [{"role": "user", "content": [PART]}]'.replace(
            "PART", '{"type": "text", "text": "\\udc00"}'
        ),
        "messages.0.content.0.text",
    ),
    ("/v1/completions", '"model": "tiny", "prompt": [18446744073709551616]', "prompt"),
    ("/v1/completions", '"model": "tiny", "prompt": [[1, 18446744073709551616]]', "prompt"),
    ("/v1/completions", '"model": "tiny", "prompt": [-1]', "prompt"),
    ("/v1/completions", '"model": "tiny", "prompt": [4000]', "prompt"),
    ("/v1/completions", '"model": "tiny", "prompt": "a\\ud800b"', "prompt"),
    ("/v1/completions", '"model": "tiny", "prompt": ["ok", "\\ud800"]', "prompt.1"),
    ("/v1/completions", TEXT + ', "stop": "\\ud800"', "stop"),
    (
        "/v1/completions",
        '"model": "tiny", "prompt": "hi", "max_tokens": 18446744073709551616',
        "max_tokens",
    ),
    ("/v1/completions", TEXT + ', "logprobs": 18446744073709551616', "logprobs"),
    (
        "/v1/messages",
        '"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800"}], "max_tokens": 1',
        "messages.0.content",
    ),
    ("/v1/messages", CLAUDE + ', "stop_sequences": ["\\ud800"]', "stop_sequences.0"),
    ("/v1/messages", CLAUDE + ', "system": "\\ud800"', "system"),
    ("/v1/messages", CLAUDE + ', "top_k": 18446744073709551616', "top_k"),
    (
        "/v1/messages",
        '"model": "tiny", "messages": [], "max_tokens": 18446744073709551616',
        "max_tokens",
    ),
    (
        "/v1/messages/count_tokens",
        '"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800"}]',
        "messages.0.content",
    ),
    ("/v1/messages/count_tokens", '"model": "tiny", "messages": [{"\\ud800": 1}]', "messages.0"),
]


@pytest.mark.parametrize(("path", "fields", "param"), BAD)
def test_out_of_range_and_lone_surrogates_are_400s_naming_the_field(served, path, fields, param):
    with served.connection() as conn:
        response, data = exchange(conn, "POST", path, ("{" + fields + "}").encode())
        assert response.status == 400, data
        body = json.loads(data)
        if path.startswith("/v1/messages"):
            assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
            assert body["error"]["message"].startswith(param + ":"), body
        else:
            error = body["error"]
            assert error["type"] == "invalid_request_error" and error["param"] == param, error
        # The connection is still good for the next request.
        response, _ = exchange(conn, "GET", "/health")
        assert response.status == 200


def test_more_generations_than_the_server_holds_is_a_400_not_a_503(tiny, monkeypatch):
    """A request of more choices than the server ever holds at once (running and waiting) could
    never be admitted: a 400 naming n, not a 503 that invites a retry; the prompts are not
    even tokenized."""
    encoded: list[str] = []
    real_encode = smolgen.Tokenizer.encode_prompt
    monkeypatch.setattr(
        smolgen.Tokenizer,
        "encode_prompt",
        lambda self, t: encoded.append(t) or real_encode(self, t),
    )
    app = make_app(tiny, max_concurrent=1, max_queue=2)
    chat, text, fits = call(
        app,
        ("POST", "/v1/chat/completions", {"model": MODEL, "messages": HI, "n": 4}),
        ("POST", "/v1/completions", {"model": MODEL, "prompt": ["a", "b"], "n": 2}),
        ("POST", "/v1/completions", {"model": MODEL, "prompt": [[5], [6], [7]], "max_tokens": 1}),
    )
    for r in (chat, text):
        assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text
        assert "at most 3 at once" in r.json()["error"]["message"]
    assert encoded == []
    assert fits.status_code == 200
    assert app.state.scheduler.counters.refused == 0


def test_raw_bytes_of_a_surrogate_are_refused_as_its_escape_is(served):
    raw = b'{"model": "tiny", "prompt": "a\xed\xa0\x80", "max_tokens": 1}'
    # A surrogate pair (an emoji, as json.dumps escapes it) is one character: accepted.
    pair = json.dumps({"model": MODEL, "prompt": "sea \U0001f30a", "max_tokens": 1}).encode()
    assert b"\\ud83c\\udf0a" in pair
    with served.connection() as conn:
        response, data = exchange(conn, "POST", "/v1/completions", raw)
        assert response.status == 400 and json.loads(data)["error"]["param"] == "prompt"
        response, data = exchange(conn, "POST", "/v1/completions", pair)
        assert response.status == 200, data


# --- 7. the OpenAPI document describes the errors; a 405 says what is allowed ------------------


def test_the_openapi_document_describes_each_routes_errors(tiny):
    (r,) = call(make_app(tiny), ("GET", "/openapi.json", None))
    doc = r.json()
    schemas = doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (path, method)  # validation errors are 400s
            if method == "post":
                wanted = {"400", "401", "404", "413", "500"}
            else:
                wanted = {"401", "500"} | ({"404"} if "{model_id}" in path else set())
            assert wanted <= set(responses), (path, method, sorted(responses))
            error = "AnthropicError" if path.startswith("/v1/messages") else "OpenAIError"
            for status in wanted:
                ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/" + error), (path, method, status, ref)
    assert doc["paths"]["/v1/messages"]["post"]["responses"]["529"]
    assert doc["paths"]["/v1/chat/completions"]["post"]["responses"]["503"]
    assert set(schemas["OpenAIError"]["properties"]) == {"error"}
    assert set(schemas["AnthropicError"]["properties"]) == {"type", "error"}


def test_the_api_pages_work_without_the_internet(tiny):
    """/docs and /redoc load their scripts and styles from the server itself, not a CDN."""
    app = make_app(tiny)
    pages = call(app, ("GET", "/docs", None), ("GET", "/redoc", None))
    assets = set()
    for page in pages:
        assert page.status_code == 200 and "/openapi.json" in page.text
        assert "://" not in page.text  # no CDN, no web fonts
        sources = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
        assert sources and all(src.startswith("/") for src in sources), sources
        assets.update(sources)
    for asset in call(app, *(("GET", src, None) for src in sorted(assets))):
        assert asset.status_code == 200 and len(asset.content) > 10_000, asset.url


def test_a_405_carries_allow(tiny, served):
    """Every route, asked with a method it does not take, answers 405 with ``Allow`` naming
    the ones it does, in its API's error shape."""
    app = make_app(tiny)
    (doc,) = call(app, ("GET", "/openapi.json", None))
    asked = []
    for path, operations in doc.json()["paths"].items():
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - {m.upper() for m in operations}:
            asked.append((path, method, ", ".join(sorted(m.upper() for m in operations))))
    answers = call(app, *[(m, p.replace("{model_id}", MODEL), None) for p, m, _ in asked])
    for (path, method, allowed), r in zip(asked, answers, strict=True):
        assert r.status_code == 405 and r.headers["allow"] == allowed, (method, path, r.headers)
        body = r.json()
        error = body["error"]
        if path.startswith("/v1/messages"):
            assert body["type"] == "error" and error["type"] == "invalid_request_error"
        else:
            assert (
                error["code"] == "method_not_allowed" and error["type"] == "invalid_request_error"
            )
    with served.connection() as conn:
        response, _ = exchange(conn, "DELETE", "/v1/completions")
    assert response.status == 405 and response.getheader("allow") == "POST"


# --- 8. a request without max_tokens gets the server's default, not the whole window ------------


def completion_tokens(response) -> int:
    return response.json()["usage"]["completion_tokens"]


def test_max_tokens_defaults_to_the_servers_cap(tiny):
    app = make_app(tiny, max_tokens_default=3)
    chat = {"model": MODEL, "messages": HI, "logit_bias": END_TOKENS, "temperature": 0}
    text = {"model": MODEL, "prompt": "hello", "logit_bias": END_TOKENS, "temperature": 0}
    near_the_end = {**text, "prompt": [5] * (tiny.context_length - 2)}
    unset, null, explicit, legacy, legacy_null, short = call(
        app,
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/chat/completions", {**chat, "max_tokens": None}),
        ("POST", "/v1/chat/completions", {**chat, "max_completion_tokens": 7}),
        ("POST", "/v1/completions", text),
        ("POST", "/v1/completions", {**text, "max_tokens": None}),
        ("POST", "/v1/completions", {**near_the_end, "max_tokens": None}),
    )
    assert completion_tokens(unset) == completion_tokens(null) == 3
    assert completion_tokens(explicit) == 7  # an explicit value wins
    assert completion_tokens(legacy) == 16  # /v1/completions' own default when left out
    assert completion_tokens(legacy_null) == 3
    assert completion_tokens(short) == 2  # what is left of the window
    health = call(app, ("GET", "/health", None))[0].json()
    assert health["limits"] == {"max_tokens_default": 3, "max_body_bytes": 8 * 2**20}


def test_the_flags_reach_the_server(served):
    body = json.dumps({"model": MODEL, "messages": HI, "logit_bias": END_TOKENS}).encode()
    with served.connection() as conn:
        response, data = exchange(conn, "POST", "/v1/chat/completions", body)
    assert response.status == 200 and json.loads(data)["usage"]["completion_tokens"] == 3
    help_text = subprocess.run(
        [sys.executable, "-m", "smolgen", "serve", "--help"], capture_output=True, text=True
    ).stdout
    assert "--max-body-bytes" in help_text and "--max-tokens-default" in help_text


# --- 7. the document, held to the server: schema-driven requests --------------------------------


def test_schema_driven_requests_get_no_5xx_and_answers_that_match_the_document(tiny):
    """Schemathesis builds requests from ``/openapi.json`` (valid ones, half of them naming the
    served model so they reach the model, and invalid ones) and checks every answer: no 5xx,
    a documented status, content type, headers and body schema, invalid requests refused.
    Not checked: that every schema-valid request is accepted, as a valid request can still ask
    for more than the context window holds (400) or a token the vocabulary lacks."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(tiny))
    requests = st.one_of(
        st.tuples(st.booleans(), schema.as_strategy(GenerationMode.POSITIVE)),
        st.tuples(st.just(False), schema.as_strategy(GenerationMode.NEGATIVE)),
    )
    statuses: dict[tuple[str, int], int] = {}

    @given(requests)
    @settings(
        max_examples=300,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(request):
        served, case = request
        if served and isinstance(case.body, dict):
            case.body["model"] = MODEL
        if served and "model_id" in (case.path_parameters or {}):
            case.path_parameters["model_id"] = MODEL
        response = case.call_and_validate(
            excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )
        key = (case.operation.label, response.status_code)
        statuses[key] = statuses.get(key, 0) + 1

    check()
    assert not any(status >= 500 for _, status in statuses)
    # The valid requests reached the model: some were answered.
    answered = sorted(op for op, status in statuses if status == 200 and op.startswith("POST"))
    assert answered, sorted(statuses.items())


# --- 9. a request without temperature or top_p gets the server's, not the APIs' 1.0 ------------


def reply_text(response) -> str:
    body = response.json()
    if "choices" in body:
        return body["choices"][0]["message"]["content"]
    return "".join(block["text"] for block in body["content"])


def test_sampling_defaults_reach_every_route(tiny):
    chat = {"model": MODEL, "messages": HI, "max_tokens": 8, "seed": 3, "logit_bias": END_TOKENS}
    messages = {"model": MODEL, "messages": HI, "max_tokens": 8}
    for temperature, top_p in [(1.5, 0.95), (0.0, 0.9)]:
        app = make_app(tiny, temperature=temperature, top_p=top_p)
        given = {"temperature": temperature, "top_p": top_p}
        unset, explicit, anthropic_unset, anthropic_explicit, health = call(
            app,
            ("POST", "/v1/chat/completions", chat),
            ("POST", "/v1/chat/completions", {**chat, **given}),
            ("POST", "/v1/messages", messages),
            ("POST", "/v1/messages", {**messages, **given}),
            ("GET", "/health", None),
        )
        assert reply_text(unset) == reply_text(explicit)
        if temperature == 0:  # Anthropic's API has no seed: compare where the draw is greedy
            assert reply_text(anthropic_unset) == reply_text(anthropic_explicit)
        assert health.json()["sampling_defaults"] == {"temperature": temperature, "top_p": top_p}
    # The tiny model's distributions are too peaked to tell temperatures apart by their text
    # (test_server.py does that on the real model). The library's default is the command
    # line's, smolgen chat's.
    health = call(make_app(tiny), ("GET", "/health", None))[0].json()
    assert health["sampling_defaults"] == {"temperature": 0.7, "top_p": 0.9}
    for bad in ({"temperature": 2.5}, {"top_p": 0.0}):
        with pytest.raises(smolgen.errors.InvalidArgumentError):
            make_app(tiny, **bad)


@pytest.mark.parametrize("flags", [["--temperature", "3"], ["--top-p", "0"]])
def test_bad_sampling_defaults_exit_2_before_the_model_loads(flags):
    run = subprocess.run(
        [sys.executable, "-m", "smolgen", "serve", "-m", "no-such-model.gguf", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--temperature must be" in run.stderr, run.stderr


@pytest.mark.parametrize(
    ("flags", "status", "words"),
    [
        (["--port", "70000"], 2, "--port must be from 0 to 65535"),
        (["--host", "no-such-host.invalid"], 9, "cannot listen on no-such-host.invalid"),
    ],
)
def test_an_address_that_cannot_be_listened_on_fails_before_the_model_loads(flags, status, words):
    run = subprocess.run(
        [sys.executable, "-m", "smolgen", "serve", "-m", "no-such-model.gguf", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == status and words in run.stderr, run.stderr
