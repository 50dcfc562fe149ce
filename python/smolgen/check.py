"""One smoke test for any OpenAI- or Anthropic-compatible endpoint: ``smolgen serve``, llama.cpp's
server, Ollama, vLLM, or a hosted API.

Each check sends real requests and asserts what a client relies on: a plain chat with consistent
usage, a streamed chat (chunks arrive, the stream ends properly, usage at the end, UTF-8
intact), stop sequences and ``max_tokens`` honoured, the error shape of a bad request and of a
prompt past the context window, throttling answered with ``Retry-After`` (the client retries as
the source material's does: the server's ``Retry-After``, else 1 s, 2 s, 4 s), and latency (time
to first token over several requests, and tokens/s).

Only the standard library speaks HTTP here, so the check runs wherever smolgen is installed.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: The statuses a client retries, and how often.
RETRIED = frozenset({429, 500, 502, 503, 529})
RETRIES = 3
#: The statuses that mean "too much at once": they should say when to come back.
THROTTLED = frozenset({429, 503, 529})
#: The longest wait a ``Retry-After`` is followed for, in seconds.
MAX_WAIT = 30.0
#: The most of an answer (or of one streamed line) read: an endpoint cannot make the check
#: read without end.
MAX_BODY = 16 * 2**20

#: Seconds one request may take, by default.
TIMEOUT = 60.0

#: Every check, in the order they run; ``skip`` takes these names.
CHECKS = ("chat", "stream", "stop", "max_tokens", "bad_request", "overflow", "throttle", "latency")

#: Multi-byte characters the streamed reply is asked to repeat: a server that cuts a chunk
#: inside a character shows it as invalid UTF-8 or U+FFFD.
UTF8_PROMPT = "Repeat exactly: café, naïve, Straße, 日本語, 한국어, 🙂🚀."


@dataclass
class Endpoint:
    """Where the check sends its requests. ``url`` is the server's root or its ``/v1``."""

    url: str
    model: str | None = None
    api_key: str | None = None
    anthropic: bool = False
    timeout: float = TIMEOUT

    @property
    def root(self) -> str:
        root = self.url.rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.anthropic:
            headers["anthropic-version"] = "2023-06-01"
            if self.api_key:
                headers["x-api-key"] = self.api_key
        elif self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass
class Outcome:
    """One check's result: ``passed`` is None when it could not apply (skipped)."""

    name: str
    passed: bool | None
    detail: str


@dataclass
class Report:
    endpoint: str
    api: str
    model: str
    outcomes: list[Outcome] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.passed is not False for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "api": self.api,
            "model": self.model,
            "ok": self.ok,
            "checks": [asdict(o) for o in self.outcomes],
            "latency": self.latency,
        }


class CheckFailed(Exception):
    """An assertion about the endpoint did not hold."""


class NotApplicable(Exception):
    """The check could not be made (the reply gave it nothing to test)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise CheckFailed(f"HTTP {self.status} with a body that is not JSON: {e}") from None


@dataclass
class Reply:
    """A chat completion in either API's shape, reduced to what the checks compare."""

    text: str
    finish: str  # "stop" or "length" (Anthropic's end_turn / stop_sequence / max_tokens mapped)
    prompt_tokens: int
    completion_tokens: int
    raw_finish: str | None = None


class Client:
    """Requests in the endpoint's API shape, retried on 429/5xx as a careful client does."""

    def __init__(self, endpoint: Endpoint, sleep: Callable[[float], None] = time.sleep):
        self.endpoint = endpoint
        self.sleep = sleep
        #: Every answer's status and whether it carried ``Retry-After``, in arrival order.
        self.seen: list[tuple[int, bool]] = []
        self.lock = threading.Lock()

    def record(self, response: Response) -> None:
        with self.lock:
            self.seen.append((response.status, "retry-after" in response.headers))

    @property
    def chat_path(self) -> str:
        return "/v1/messages" if self.endpoint.anthropic else "/v1/chat/completions"

    def body(self, prompt: str, max_tokens: int, **options: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
        }
        stop = options.pop("stop", None)
        if stop is not None:
            body["stop_sequences" if self.endpoint.anthropic else "stop"] = stop
        if options.pop("stream", False):
            body["stream"] = True
            if not self.endpoint.anthropic:
                body["stream_options"] = {"include_usage": True}
        body.update(options)
        return body

    def open(self, method: str, path: str, body: Any = None) -> Any:
        """The raw response, open (for streaming); raises ``urllib.error.HTTPError``."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoint.root + path, data=data, headers=self.endpoint.headers(), method=method
        )
        return urllib.request.urlopen(request, timeout=self.endpoint.timeout)

    def attempt(
        self, method: str, path: str, body: Any = None, *, retry: bool = True
    ) -> tuple[Any, float] | Response:
        """The open response of the first attempt that succeeds, with the time that attempt
        began; or the error response that is not retried (any, without ``retry``), once the
        statuses in :data:`RETRIED` have been retried: after the server's ``Retry-After`` when
        it gives one, else after 1, 2, 4 s."""
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                response = self.open(method, path, body)
            except urllib.error.HTTPError as e:
                failed = Response(e.code, _lower(e.headers), e.read())
            except (urllib.error.URLError, OSError) as e:
                raise CheckFailed(f"no answer from {self.endpoint.root}: {_reason(e)}") from None
            else:
                self.record(Response(response.status, _lower(response.headers), b""))
                return response, started
            self.record(failed)
            if not retry or failed.status not in RETRIED or attempt >= RETRIES:
                return failed
            self.sleep(retry_wait(failed, attempt))
            attempt += 1

    def send(self, method: str, path: str, body: Any = None, *, retry: bool = True) -> Response:
        """One request, read whole (retried as :meth:`attempt` says)."""
        answer = self.attempt(method, path, body, retry=retry)
        if isinstance(answer, Response):
            return answer
        with answer[0] as r:
            try:
                data = r.read(MAX_BODY + 1)
            except OSError as e:
                raise CheckFailed(f"the answer broke off: {_reason(e)}") from None
            if len(data) > MAX_BODY:
                raise CheckFailed(f"an answer longer than {MAX_BODY // 2**20} MiB")
            return Response(r.status, _lower(r.headers), data)

    def chat(self, prompt: str, max_tokens: int, **options: Any) -> Reply:
        response = self.send("POST", self.chat_path, self.body(prompt, max_tokens, **options))
        if response.status != 200:
            raise CheckFailed(f"HTTP {response.status}: {_snippet(response.body)}")
        return self.parse(response.json())

    def parse(self, body: Any) -> Reply:
        """A non-streamed reply, its shape checked."""
        try:
            if self.endpoint.anthropic:
                text = "".join(b["text"] for b in body["content"] if b.get("type") == "text")
                raw = body["stop_reason"]
                usage = body["usage"]
                prompt, completion = usage["input_tokens"], usage["output_tokens"]
            else:
                choice = body["choices"][0]
                text, raw = choice["message"]["content"] or "", choice["finish_reason"]
                usage = body["usage"]
                prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
                if usage.get("total_tokens") != prompt + completion:
                    raise CheckFailed(
                        f"usage.total_tokens {usage.get('total_tokens')} is not prompt_tokens "
                        f"{prompt} + completion_tokens {completion}"
                    )
        except (KeyError, IndexError, TypeError) as e:
            raise CheckFailed(f"the reply lacks {e!s} in {_snippet(json.dumps(body))}") from None
        if not isinstance(text, str):
            raise CheckFailed(f"the reply's text is a {type(text).__name__}, not a string")
        if not all(isinstance(n, int) and n >= 0 for n in (prompt, completion)):
            raise CheckFailed(f"usage counts are not counts: {prompt!r}, {completion!r}")
        return Reply(text, finish_kind(raw), prompt, completion, raw_finish=raw)

    def stream(self, prompt: str, max_tokens: int, **options: Any) -> Streamed:
        """A streamed chat, read event by event with arrival times."""
        body = self.body(prompt, max_tokens, stream=True, **options)
        answer = self.attempt("POST", self.chat_path, body)
        if isinstance(answer, Response):
            raise CheckFailed(f"HTTP {answer.status}: {_snippet(answer.body)}")
        response, started = answer
        with response:
            try:
                return read_stream(
                    response, self.endpoint.anthropic, started, self.endpoint.timeout
                )
            except OSError as e:
                raise CheckFailed(f"the stream broke off: {_reason(e)}") from None


@dataclass
class Streamed:
    text: str
    chunks: int
    finish: str | None
    completion_tokens: int | None
    ended: bool
    first_token_s: float | None
    total_s: float


def read_stream(response: Any, anthropic: bool, started: float, timeout: float) -> Streamed:
    """Reads server-sent events to the end (for at most ``timeout`` seconds), checking each
    line is UTF-8."""
    text: list[str] = []
    chunks, finish, completion, ended, first = 0, None, None, False, None
    for data in _events(response, started + timeout):
        if not anthropic and data == "[DONE]":
            ended = True
            break
        try:
            event = json.loads(data)
        except ValueError:
            raise CheckFailed(f"an event that is not JSON: {_snippet(data)}") from None
        if anthropic:
            kind = event.get("type")
            piece = ""
            if kind == "content_block_delta":
                piece = event.get("delta", {}).get("text", "")
            elif kind == "message_delta":
                finish = event.get("delta", {}).get("stop_reason")
                completion = event.get("usage", {}).get("output_tokens")
            elif kind == "message_stop":
                ended = True
                break
            elif kind == "error":
                raise CheckFailed(f"the stream carried an error: {_snippet(data)}")
        else:
            if "error" in event:
                raise CheckFailed(f"the stream carried an error: {_snippet(data)}")
            choices = event.get("choices") or []
            piece = (choices[0].get("delta", {}).get("content") or "") if choices else ""
            if choices and choices[0].get("finish_reason"):
                finish = choices[0]["finish_reason"]
            if event.get("usage"):
                completion = event["usage"].get("completion_tokens")
        if piece:
            chunks += 1
            if first is None:
                first = time.perf_counter() - started
            text.append(piece)
    return Streamed(
        "".join(text),
        chunks,
        finish_kind(finish) if finish else None,
        completion,
        ended,
        first,
        time.perf_counter() - started,
    )


def _events(response: Any, deadline: float) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent event stream, each line strictly UTF-8, until
    the stream ends or the deadline passes."""
    while raw := response.readline(MAX_BODY + 1):
        if len(raw) > MAX_BODY:
            raise CheckFailed(f"a streamed line longer than {MAX_BODY // 2**20} MiB")
        if time.perf_counter() > deadline:
            raise CheckFailed("the stream went on past --timeout")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckFailed(
                f"a streamed line is not UTF-8 ({e.reason} at byte {e.start})"
            ) from None
        line = line.rstrip("\r\n")
        if line.startswith("data:"):
            yield line[5:].strip()


def finish_kind(raw: str | None) -> str:
    """OpenAI's finish_reason and Anthropic's stop_reason on one scale."""
    return {
        "stop": "stop",
        "end_turn": "stop",
        "stop_sequence": "stop",
        "length": "length",
        "max_tokens": "length",
    }.get(raw or "", str(raw))


def retry_wait(response: Response, attempt: int) -> float:
    """The server's ``Retry-After`` (seconds) when it gives one, else 1, 2, 4 s."""
    after = response.headers.get("retry-after")
    if after is not None:
        try:
            return min(max(float(after), 0.0), MAX_WAIT)
        except ValueError:
            pass
    return float(2**attempt)


def error_shape(body: Any, anthropic: bool) -> str | None:
    """What is wrong with an error body's shape, or None."""
    if anthropic:
        if not isinstance(body, dict) or body.get("type") != "error":
            return 'not {"type": "error", "error": {...}}'
        error = body.get("error")
    else:
        error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return 'no "error" object'
    missing = [k for k in ("type", "message") if not isinstance(error.get(k), str)]
    return f"error.{' and error.'.join(missing)} missing" if missing else None


# -- the checks ----------------------------------------------------------------------------------


def check_chat(client: Client, settings: Settings, report: Report) -> str:
    reply = client.chat("Say hello in five words.", 16, temperature=0)
    if reply.completion_tokens > 16:
        raise CheckFailed(f"{reply.completion_tokens} completion tokens for max_tokens 16")
    if reply.finish not in ("stop", "length"):
        raise CheckFailed(f"finish reason {reply.raw_finish!r}")
    return (
        f"{reply.prompt_tokens} + {reply.completion_tokens} tokens, finish {reply.raw_finish}: "
        f"{_quote(reply.text)}"
    )


def check_stream(client: Client, settings: Settings, report: Report) -> str:
    s = client.stream(UTF8_PROMPT, 48, temperature=0)
    if not s.ended:
        end = "message_stop" if client.endpoint.anthropic else "data: [DONE]"
        raise CheckFailed(f"the stream stopped without {end}")
    if s.completion_tokens is None:
        raise CheckFailed("no usage at the end of the stream")
    if s.completion_tokens > 0 and s.chunks == 0:
        raise CheckFailed(f"usage says {s.completion_tokens} tokens, no text chunk arrived")
    if "\ufffd" in s.text:
        raise CheckFailed(f"U+FFFD in the streamed text (a character cut apart): {_quote(s.text)}")
    if s.finish not in ("stop", "length"):
        raise CheckFailed(f"finish reason {s.finish!r} at the end of the stream")
    return f"{s.chunks} chunks, {s.completion_tokens} tokens, UTF-8 intact: {_quote(s.text)}"


def check_stop(client: Client, settings: Settings, report: Report) -> str:
    prompt = "Count from one to twenty in words, separated by spaces."
    reference = client.chat(prompt, 24, temperature=0)
    stop = _stop_word(reference.text)
    if stop is None:
        raise NotApplicable(f"no word to stop at in the greedy reply {_quote(reference.text)}")
    reply = client.chat(prompt, 24, temperature=0, stop=[stop])
    if stop in reply.text:
        raise CheckFailed(f"the stop sequence {stop!r} is in the reply {_quote(reply.text)}")
    if reply.finish != "stop":
        raise CheckFailed(f"finish reason {reply.raw_finish!r} after stopping at {stop!r}")
    if client.endpoint.anthropic and reply.raw_finish != "stop_sequence":
        raise CheckFailed(f"stop_reason {reply.raw_finish!r}, not 'stop_sequence'")
    return f"stopped before {stop!r}: {_quote(reply.text)}"


def check_max_tokens(client: Client, settings: Settings, report: Report) -> str:
    reply = client.chat("Write a long story about a dragon and a lighthouse.", 3, temperature=0)
    if reply.completion_tokens > 3:
        raise CheckFailed(f"{reply.completion_tokens} completion tokens for max_tokens 3")
    if reply.completion_tokens == 3 and reply.finish != "length":
        raise CheckFailed(f"3 tokens at max_tokens 3 but finish reason {reply.raw_finish!r}")
    return f"{reply.completion_tokens} tokens, finish {reply.raw_finish}: {_quote(reply.text)}"


def check_bad_request(client: Client, settings: Settings, report: Report) -> str:
    body = client.body("Hello", 8)
    body["temperature"] = "hot"
    response = client.send("POST", client.chat_path, body, retry=False)
    return expect_error(response, client.endpoint.anthropic, "temperature 'hot'")


def check_overflow(client: Client, settings: Settings, report: Report) -> str:
    prompt = "hello " * settings.overflow_words
    body = client.body(prompt, 1)
    response = client.send("POST", client.chat_path, body, retry=False)
    return expect_error(response, client.endpoint.anthropic, f"{settings.overflow_words} words")


def expect_error(response: Response, anthropic: bool, what: str) -> str:
    if response.status != 400:
        raise CheckFailed(f"{what}: HTTP {response.status}, not 400: {_snippet(response.body)}")
    problem = error_shape(response.json(), anthropic)
    if problem:
        raise CheckFailed(f"{what}: 400, but {problem}: {_snippet(response.body)}")
    message = response.json()["error"]["message"]
    return f"{what}: 400, {_quote(message)}"


def check_throttle(client: Client, settings: Settings, report: Report) -> str:
    """A burst of concurrent requests: every throttled answer carries ``Retry-After``, and every
    request succeeds within the retries."""
    burst = Client(client.endpoint, client.sleep)
    failures: list[str] = []

    def one() -> None:
        try:
            burst.chat("Name a colour.", 8, temperature=0)
        except CheckFailed as e:
            with burst.lock:
                failures.append(str(e))

    threads = [threading.Thread(target=one) for _ in range(settings.burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    throttled = [(status, hinted) for status, hinted in burst.seen if status in THROTTLED]
    unhinted = [status for status, hinted in throttled if not hinted]
    if unhinted:
        raise CheckFailed(f"{len(unhinted)} throttled answers ({unhinted[0]}) without Retry-After")
    if failures:
        raise CheckFailed(
            f"{len(failures)} of {settings.burst} failed after retries: {failures[0]}"
        )
    if not throttled:
        return f"{settings.burst} concurrent requests, none throttled"
    return (
        f"{settings.burst} concurrent requests, {len(throttled)} throttled answers with "
        "Retry-After, all succeeded on retry"
    )


def check_latency(client: Client, settings: Settings, report: Report) -> str:
    firsts, rates = [], []
    for i in range(settings.requests):
        s = client.stream(f"Tell me one fact about the number {i + 1}.", 32, temperature=0)
        if s.first_token_s is None:
            raise CheckFailed(f"request {i + 1}: no token arrived")
        firsts.append(s.first_token_s * 1000)
        if s.completion_tokens and s.completion_tokens > 1 and s.total_s > s.first_token_s:
            rates.append((s.completion_tokens - 1) / (s.total_s - s.first_token_s))
    latency = report.latency
    latency["ttft_p50_ms"] = _percentile(firsts, 50)
    latency["ttft_p95_ms"] = _percentile(firsts, 95)
    latency["tokens_per_s"] = statistics.median(rates) if rates else 0.0
    latency["requests"] = float(settings.requests)
    detail = (
        f"TTFT p50 {latency['ttft_p50_ms']:.0f} ms, p95 {latency['ttft_p95_ms']:.0f} ms, "
        f"{latency['tokens_per_s']:.1f} tokens/s over {settings.requests} requests"
    )
    limit = settings.max_ttft_p95_ms
    if limit is not None and latency["ttft_p95_ms"] > limit:
        raise CheckFailed(f"{detail}: p95 over the {limit:.0f} ms asked for")
    return detail


@dataclass
class Settings:
    requests: int = 10
    burst: int = 8
    overflow_words: int = 20_000
    max_ttft_p95_ms: float | None = None


#: Each check: the endpoint's client, the settings, and the report, where a check that measures
#: something (latency) leaves its figures. Returns the detail shown; raises CheckFailed.
RUNNERS: dict[str, Callable[[Client, Settings, Report], str]] = {
    "chat": check_chat,
    "stream": check_stream,
    "stop": check_stop,
    "max_tokens": check_max_tokens,
    "bad_request": check_bad_request,
    "overflow": check_overflow,
    "throttle": check_throttle,
    "latency": check_latency,
}


def served_model(client: Client) -> str:
    """The first model ``/v1/models`` lists."""
    response = client.send("GET", "/v1/models")
    if response.status != 200:
        raise CheckFailed(f"GET /v1/models: HTTP {response.status}; name the model with --model")
    try:
        return str(response.json()["data"][0]["id"])
    except (KeyError, IndexError, TypeError):
        raise CheckFailed("/v1/models lists no model; name it with --model") from None


def run_checks(
    endpoint: Endpoint,
    settings: Settings | None = None,
    skip: tuple[str, ...] = (),
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Report:
    """Every check in :data:`CHECKS` not in ``skip``, in order; a failure does not stop the rest."""
    settings = settings or Settings()
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; the checks are {', '.join(CHECKS)}")
    client = Client(endpoint)
    report = Report(endpoint.root, "anthropic" if endpoint.anthropic else "openai", "")
    if endpoint.model is None:
        try:
            endpoint = replace(endpoint, model=served_model(client))
        except CheckFailed as e:
            report.outcomes.append(Outcome("model", False, str(e)))
            return report
        client = Client(endpoint)
    report.model = str(endpoint.model)
    for name in CHECKS:
        if name in skip:
            outcome = Outcome(name, None, "skipped")
        else:
            try:
                outcome = Outcome(name, True, RUNNERS[name](client, settings, report))
            except CheckFailed as e:
                outcome = Outcome(name, False, str(e))
            except NotApplicable as e:
                outcome = Outcome(name, None, str(e))
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return report


def _stop_word(text: str) -> str | None:
    """A word of ``text`` after its first, to stop at: the reply before it is then non-empty."""
    words = text.split()
    for word in words[1:]:
        if len(word) >= 2 and text.index(word) > 0:
            return word
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers.items() if headers else [])}


def _reason(e: BaseException) -> str:
    return str(getattr(e, "reason", e))


def _snippet(body: bytes | str, limit: int = 160) -> str:
    text = body if isinstance(body, str) else body.decode("utf-8", errors="replace")
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _quote(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= limit else text[:limit] + "...", ensure_ascii=False)


def parse_url(url: str) -> str:
    """``url`` if it is an http(s) URL, else a ValueError that says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r} (e.g. http://127.0.0.1:8000)")
    return url
