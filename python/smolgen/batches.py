"""Batch jobs in the OpenAI Batch API's file format, run on the local model.

Each input line is a request, ``{"custom_id", "method": "POST", "url": "/v1/chat/completions"
| "/v1/completions", "body": {...}}``, and each output line its answer, ``{"id", "custom_id",
"response": {"status_code", "request_id", "body"}, "error"}``: the body is what ``smolgen
serve`` answers the same request with (the same request models, the same serving code), so a
file prepared for a hosted batch job runs here unchanged. The body's ``model`` may name any
model; the answer names the one that ran.

Requests run concurrently through the server's scheduler: the running generations decode
together, one batched forward pass per token (:func:`smolgen.step_streams`), and a finished one
is replaced by the next request at once. A request the API would refuse (a bad field, a prompt
too long) is answered as the API answers it, with its 4xx status and error body; a line that is
not a request at all (not JSON, no ``custom_id``, another method or URL) gets ``"response":
null`` and an ``error``. Either way the job goes on.

:func:`run_batch_file` is resumable: every answer is appended to the output file and synced to
disk as it completes, and a run started again over the same files skips the ``custom_id`` s the
output already holds. A run killed mid-write leaves at most a torn last line, which the next run
removes before it appends, so no record is lost or repeated.
"""

from __future__ import annotations

import json
import os
import queue
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError
from .prompt_rows import Unreadable, numbered_lines, prompt_requests

if TYPE_CHECKING:
    from .model import Model
    from .server.scheduler import Scheduler

#: An input line: JSON text, already parsed, or unreadable (and why).
Line = str | dict[str, Any] | Unreadable
#: The endpoints a batch line may name.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
#: How a line without a readable ``custom_id`` is reported: by its line number.
LINE_ID = "line-{}"
#: Generations a request may ask for beyond the running ones (``n``, several prompts).
_QUEUE = 4096


@dataclass
class BatchStats:
    """What a batch run did: requests answered (``succeeded`` with status 200, ``failed``
    otherwise), those ``skipped`` as already answered by an earlier run, the tokens of the
    successful ones, and the wall time."""

    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    _started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def count(self, record: dict[str, Any]) -> None:
        self.requests += 1
        response = record.get("response")
        if response is not None and response["status_code"] == 200:
            self.succeeded += 1
            usage = response["body"].get("usage") or {}
            self.prompt_tokens += usage.get("prompt_tokens", 0)
            self.completion_tokens += usage.get("completion_tokens", 0)
        else:
            self.failed += 1
        self.wall_s = time.perf_counter() - self._started

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["completion_tokens_per_s"] = self.completion_tokens_per_s
        return d


def output_record(
    custom_id: str | None,
    status: int | None = None,
    body: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One output line as OpenAI writes it: a response (``status`` and ``body``) or an
    ``error`` (``{"code", "message"}``) for a line that was not a request."""
    response = None
    if status is not None:
        response = {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}", "body": body}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def invalid_line_record(custom_id: str, problem: str) -> dict[str, Any]:
    """The output record of an input line that is not a request (see :func:`not_a_request`)."""
    return output_record(custom_id, error={"code": "invalid_request", "message": problem})


def batch(
    model: Model,
    requests: Iterable[str | dict[str, Any]],
    *,
    model_id: str = "smolgen",
    concurrency: int = 8,
    max_tokens_default: int = 512,
    stats: BatchStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Answers batch ``requests`` (input lines as JSON text or parsed) with ``model``, yielding
    output records in the order they complete. ``concurrency`` requests decode together;
    ``max_tokens_default`` is a request's ``max_tokens`` when it gives none. Stopping the
    iteration cancels what is still running.

    Needs the ``serve`` extra (the request models are the server's)."""
    _check_job(concurrency, max_tokens_default)
    lines = ((i, r) for i, r in enumerate(requests, start=1))
    return _answers(model, lines, set(), model_id, concurrency, max_tokens_default, stats)


def run_batch_file(
    model: Model,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    model_id: str = "smolgen",
    concurrency: int = 8,
    max_tokens_default: int = 512,
    on_record: Callable[[dict[str, Any], BatchStats], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    prompt_field: str | None = None,
    id_field: str | None = None,
    system: str | None = None,
    settings: dict[str, Any] | None = None,
) -> BatchStats:
    """Runs the batch file ``input_path`` into ``output_path`` (JSONL, appended, each record
    synced as it completes), skipping requests an earlier run already answered there.

    With ``prompt_field``, the input is plain rows instead (JSONL, CSV or Parquet): each row's
    ``prompt_field`` is asked as a chat request (after ``system``, with the body ``settings``),
    named by its ``id_field`` or ``row-N`` (see :mod:`smolgen.prompt_rows`).

    ``on_start(to_run, already_done)`` is called once the files are checked, ``on_record``
    after each record is written. Raises :class:`~smolgen.errors.InvalidArgumentError` before
    running anything when two input lines share a ``custom_id`` or the output file is not an
    earlier run's."""
    _check_job(concurrency, max_tokens_default)
    rows = {"prompt_field": prompt_field, "id_field": id_field, "system": system}
    job = FileJob(Path(input_path), Path(output_path), on_start, settings=settings, **rows)
    with job.writer(on_record) as write:
        for record in _answers(
            model, job.lines(), job.done, model_id, concurrency, max_tokens_default, None
        ):
            write(record)
    return job.stats


class FileJob:
    """A batch file job's input and output, checked before anything runs: the requests (read
    again from the file each time :meth:`lines` is called), those an earlier run answered
    (:func:`resume_point`), and the statistics the records written add to. Raises
    :class:`~smolgen.errors.InvalidArgumentError` for an input whose ``custom_id`` s repeat or
    an output that is not an earlier run's; calls ``on_start(to_run, already_done)``."""

    def __init__(
        self,
        input_path: Path,
        output_path: Path,
        on_start: Callable[[int, int], None] | None = None,
        **rows: Any,
    ) -> None:
        self.input_path, self.output_path, self.rows = input_path, output_path, rows
        ids = unique_ids(input_path, self.lines())
        self.done = resume_point(output_path)
        self.stats = BatchStats(skipped=sum(1 for cid in ids if cid in self.done))
        if on_start is not None:
            on_start(len(ids) - self.stats.skipped, self.stats.skipped)

    def lines(self) -> Iterator[tuple[int, Line]]:
        return input_requests(self.input_path, **self.rows)

    @contextmanager
    def writer(
        self, on_record: Callable[[dict[str, Any], BatchStats], None] | None = None
    ) -> Iterator[Callable[[dict[str, Any]], None]]:
        """``write(record)``: appends the record to the output (see :func:`append_record`),
        counts it, and calls ``on_record(record, stats)``."""
        fd = os.open(self.output_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def write(record: dict[str, Any]) -> None:
            append_record(fd, record)
            self.stats.count(record)
            if on_record is not None:
                on_record(record, self.stats)

        try:
            yield write
        finally:
            os.close(fd)


def input_requests(
    input_path: Path,
    *,
    prompt_field: str | None = None,
    id_field: str | None = None,
    system: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Iterator[tuple[int, Line]]:
    """The numbered lines of a batch file, or with ``prompt_field`` its rows of plain prompts
    as requests (see :func:`run_batch_file`)."""
    if not input_path.is_file():
        raise InvalidArgumentError(f"{input_path}: no such batch input file")
    if prompt_field is None:
        return _input_lines(input_path)
    return prompt_requests(
        input_path, prompt_field, id_field=id_field, system=system, settings=settings
    )


def _input_lines(input_path: Path) -> Iterator[tuple[int, str | Unreadable]]:
    """The input's non-blank lines, numbered, as text (see :func:`numbered_lines`)."""
    for n, raw in numbered_lines(input_path):
        yield n, raw if isinstance(raw, Unreadable) else raw.decode("utf-8", "replace")


def resume_point(output_path: Path) -> set[str]:
    """The ``custom_id`` s an earlier run's output holds. A torn last line (a run killed while
    writing it) is cut off; any other line that is not an output record is an error, as the file
    is then not an earlier run's output."""
    done: set[str] = set()
    if not output_path.exists():
        return done
    whole = 0
    with open(output_path, "r+b") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                break  # torn: the record was never complete, so it was never counted done
            try:
                record = json.loads(raw)
                custom_id = record["custom_id"]
            except (ValueError, KeyError, TypeError):
                raise InvalidArgumentError(
                    f"{output_path}: line {n} is not a batch output record, so this is not an "
                    "earlier run's output; give a new output file"
                ) from None
            done.add(custom_id)
            whole += len(raw)
        if f.tell() != whole:
            f.truncate(whole)
            f.flush()
            os.fsync(f.fileno())
    return done


def unique_ids(input_path: Path, lines: Iterable[tuple[int, Line]]) -> list[str]:
    """Every line's ``custom_id`` (or :data:`LINE_ID` where it has none), checked unique."""
    first_line: dict[str, int] = {}
    for n, text in lines:
        custom_id = custom_id_of(n, parse_line(text))
        if custom_id in first_line:
            raise InvalidArgumentError(
                f"{input_path}: lines {first_line[custom_id]} and {n} share the custom_id "
                f"{custom_id!r}; each request needs its own"
            )
        first_line[custom_id] = n
    return list(first_line)


def parse_line(line: Line) -> Any:
    if isinstance(line, (dict, Unreadable)):
        return line
    try:
        return json.loads(line)
    except ValueError:
        return None


def custom_id_of(n: int, request: Any) -> str:
    if isinstance(request, Unreadable) and request.custom_id is not None:
        return request.custom_id
    if isinstance(request, dict):
        custom_id = request.get("custom_id")
        if isinstance(custom_id, str) and custom_id:
            return custom_id
    return LINE_ID.format(n)


def append_record(fd: int, record: dict[str, Any]) -> None:
    """One record as one line, written whole and synced: a kill leaves it complete or torn."""
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
    while data:
        data = data[os.write(fd, data) :]
    os.fsync(fd)


_END = object()


def _check_job(concurrency: Any, max_tokens_default: Any) -> None:
    """Refuses settings no job can run with, before anything is read or written."""
    for name, value in (("concurrency", concurrency), ("max_tokens_default", max_tokens_default)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")


def _answers(
    model: Model,
    lines: Iterable[tuple[int, Line]],
    done: set[str],
    model_id: str,
    concurrency: int,
    max_tokens_default: int,
    stats: BatchStats | None,
) -> Iterator[dict[str, Any]]:
    """Runs the batch on an event loop in a worker thread; yields its records here."""
    try:
        from anyio.from_thread import start_blocking_portal

        from .server.scheduler import Scheduler
    except ImportError as e:
        raise InvalidArgumentError(
            f"batch jobs need the 'serve' extra ({e.name} is missing): pip install 'smolgen[serve]'"
        ) from None
    scheduler = Scheduler(
        model,
        model_id,
        max_concurrent=concurrency,
        max_queue=_QUEUE,
        max_tokens_default=max_tokens_default,
    )
    records: queue.Queue[Any] = queue.Queue()
    with start_blocking_portal() as portal:
        future = portal.start_task_soon(_run, scheduler, lines, done, records.put, concurrency)
        while (record := records.get()) is not _END:
            if stats is not None:
                stats.count(record)
            yield record
        future.result()


async def _run(
    scheduler: Scheduler,
    lines: Iterable[tuple[int, Line]],
    done: set[str],
    emit: Callable[[Any], None],
    concurrency: int,
) -> None:
    import anyio

    # A request is read and created only when a slot frees, not queued ahead: created later,
    # it finds in the prefix cache the prompts of the requests that finished meanwhile (a
    # shared system prompt is computed by the first requests only).
    in_flight = anyio.Semaphore(concurrency)

    async def answer(n: int, request: Any) -> None:
        try:
            emit(await _answer(scheduler, n, request))
        finally:
            in_flight.release()

    try:
        async with anyio.create_task_group() as tg:
            for n, line in lines:
                request = parse_line(line)
                if custom_id_of(n, request) in done:
                    continue
                await in_flight.acquire()
                tg.start_soon(answer, n, request)
    finally:
        emit(_END)


async def _answer(scheduler: Scheduler, n: int, request: Any) -> dict[str, Any]:
    """The output record of input line ``n``."""
    from pydantic import BaseModel, ValidationError

    from .server.common import dump
    from .server.errors import ApiError, api_error, validation_error
    from .server.openai.protocol import ChatCompletionRequest, CompletionRequest
    from .server.openai.serving import (
        ChatServing,
        CompletionServing,
        prompt_count,
        prompt_id_lists,
    )

    custom_id = custom_id_of(n, request)
    problem = not_a_request(request)
    if problem is not None:
        return invalid_line_record(custom_id, problem)

    async def connected() -> bool:
        return False

    body = request["body"]
    try:
        if body.get("stream"):
            raise ApiError(
                400,
                "stream: a batch request is answered whole",
                param="stream",
                code="invalid_value",
            )
        answer: BaseModel
        if request["url"] == "/v1/chat/completions":
            # Read as the server reads it: the same refusals, structured output and tools.
            chat = ChatCompletionRequest.model_validate(body)
            chat.check()
            prompt = partial(
                scheduler.model.chat_prompt, continue_final_message=chat.continue_final_message
            )
            ids = await scheduler.run_sync(prompt, chat.prompt_messages())
            answer = await ChatServing(scheduler, chat, ids).whole(connected)
        else:
            text = CompletionRequest.model_validate(body)
            text.check()
            scheduler.check_count(text.n * prompt_count(text.prompt))
            prompts = await scheduler.run_sync(prompt_id_lists, scheduler, text.prompt)
            answer = await CompletionServing(scheduler, text, prompts).whole(connected)
    except ValidationError as e:
        err = validation_error([dict(p) for p in e.errors(include_url=False)])
        return output_record(custom_id, err.status, err.openai_body())
    except Exception as e:  # answered as the server answers it; a bug is logged there
        err = api_error(e)
        return output_record(custom_id, err.status, err.openai_body())
    return output_record(custom_id, 200, dump(answer))


def not_a_request(request: Any) -> str | None:
    """Why a parsed input line is not a batch request, or ``None``."""
    if isinstance(request, Unreadable):
        return request.reason
    if not isinstance(request, dict):
        return "the line is not a JSON object"
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "custom_id: a non-empty string is required"
    if request.get("method") != "POST":
        return f"method: {request.get('method')!r} is not supported; use 'POST'"
    if request.get("url") not in ENDPOINTS:
        return f"url: {request.get('url')!r} is not supported; use one of {', '.join(ENDPOINTS)}"
    if not isinstance(request.get("body"), dict):
        return "body: a JSON object is required"
    return None
