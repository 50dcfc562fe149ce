"""A small OpenAI-compatible chat endpoint that misbehaves on request, for `smolgen check`.

Well behaved it answers every request with the same words, cut by `max_tokens` and at the first
stop sequence, refuses a non-number temperature and a prompt of more than `CONTEXT` words with
OpenAI's error shape, streams one word per chunk with usage at the end, and serves two requests
at a time, answering more with 503 and `Retry-After: 1`. Each fault breaks one of those.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: What the fake says, a word (one "token") at a time; multi-byte characters included.
WORDS = ["Hello", " café", " 日本語", " one", " two", " three", " four", " five", " six"]
WORDS += [f" w{i}" for i in range(40)]
CONTEXT = 1000
MODEL = "fake-model"

FAULTS = frozenset(
    {
        "bad_total",  # usage.total_tokens is not the sum
        "no_usage",  # a reply without usage
        "no_done",  # the stream ends without data: [DONE]
        "no_stream_usage",  # no usage chunk at the end of the stream
        "cuts_utf8",  # a character cut apart across chunks, shown as U+FFFD
        "ignores_stop",  # stop sequences are not applied
        "ignores_max_tokens",  # max_tokens is not applied
        "accepts_bad_request",  # a non-number temperature gets a 200
        "flat_error",  # errors as {"message": ...} without the "error" object
        "truncates",  # a prompt past the context is cut instead of refused
        "no_retry_after",  # 503 without Retry-After
        "stays_overloaded",  # once overloaded, 503 to everything for 10 s
    }
)


class FakeEndpoint:
    def __init__(self, *faults: str) -> None:
        unknown = set(faults) - FAULTS
        assert not unknown, unknown
        self.faults = set(faults)
        self.busy = 0
        self.overloaded_until = 0.0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self.json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self.error(404, "no such route")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                if self.path != "/v1/chat/completions":
                    return self.error(404, "no such route")
                with fake.lock:
                    now = time.monotonic()
                    overloaded = fake.busy >= 2 or now < fake.overloaded_until
                    if overloaded and "stays_overloaded" in fake.faults:
                        fake.overloaded_until = max(fake.overloaded_until, now + 10)
                    if not overloaded:
                        fake.busy += 1
                if overloaded:
                    hint = {} if "no_retry_after" in fake.faults else {"retry-after": "1"}
                    return self.error(503, "busy", headers=hint)
                try:
                    time.sleep(0.05)
                    self.answer(body)
                finally:
                    with fake.lock:
                        fake.busy -= 1

            def answer(self, body: dict) -> None:
                number = isinstance(body.get("temperature", 1.0), (int, float))
                if not number and "accepts_bad_request" not in fake.faults:
                    return self.error(400, "temperature must be a number")
                prompt = " ".join(m["content"] for m in body["messages"])
                if len(prompt.split()) > CONTEXT and "truncates" not in fake.faults:
                    return self.error(400, f"maximum context length is {CONTEXT} tokens")
                words, finish = list(WORDS), "stop"
                limit = body.get("max_tokens") or len(words)
                if limit < len(words) and "ignores_max_tokens" not in fake.faults:
                    words, finish = words[:limit], "length"
                stops = [] if "ignores_stop" in fake.faults else body.get("stop") or []
                words, stopped = self.cut(words, stops)
                if stopped:
                    finish = "stop"
                usage = {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len(words),
                    "total_tokens": len(prompt.split()) + len(words),
                }
                if "bad_total" in fake.faults:
                    usage["total_tokens"] += 1
                if body.get("stream"):
                    return self.stream(words, finish, usage)
                reply = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
                if "no_usage" in fake.faults:
                    del reply["usage"]
                self.json(200, reply)

            @staticmethod
            def cut(words: list[str], stops: list[str]) -> tuple[list[str], bool]:
                """The words up to the first stop sequence (the last one cut short there), and
                whether there was one."""
                pieces: list[str] = []
                text = ""
                for w in words:
                    hits = [(text + w).find(s) for s in stops if s in text + w]
                    if hits:
                        piece = (text + w)[len(text) : min(hits)]
                        return pieces + ([piece] if piece else []), True
                    pieces.append(w)
                    text += w
                return pieces, False

            def stream(self, words: list[str], finish: str, usage: dict) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                if "cuts_utf8" in fake.faults:
                    words = [w.replace("日本語", "\ufffd\ufffd") for w in words]
                chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": MODEL}
                for i, w in enumerate(words):
                    last = i == len(words) - 1
                    delta = {"index": 0, "delta": {"content": w}, "finish_reason": None}
                    if last:
                        delta["finish_reason"] = finish
                    self.event({**chunk, "choices": [delta]})
                if "no_stream_usage" not in fake.faults:
                    self.event({**chunk, "choices": [], "usage": usage})
                if "no_done" not in fake.faults:
                    self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

            def event(self, data: dict) -> None:
                self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            def error(self, status: int, message: str, headers: dict | None = None) -> None:
                error = {"message": message, "type": "invalid_request_error"}
                self.json(
                    status, error if "flat_error" in fake.faults else {"error": error}, headers
                )

            def json(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler
