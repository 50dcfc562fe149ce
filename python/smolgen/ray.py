"""Batch jobs past one machine, on Ray Data.

:class:`Generator` is the callable class ``ray.data.Dataset.map_batches`` takes: one model per
actor, loaded once with as many threads as the actor has CPUs, each batch of rows answered as
:func:`smolgen.batch` answers them (the running requests decode together), and the same output
columns as ``smolgen batch`` writes: ``id``, ``custom_id``, ``response`` and ``error``, the last
two as JSON text (``null`` when absent)::

    import ray, smolgen.ray
    ds = ray.data.read_parquet("reviews.parquet")
    out = ds.map_batches(
        smolgen.ray.Generator,
        fn_constructor_kwargs={"prompt_field": "text", "id_field": "id",
                               "settings": {"temperature": 0, "max_tokens": 3}},
        concurrency=4, num_cpus=2, batch_size=64,
    )

A row is a batch request line in a ``request`` column (JSON text, as in a batch file), or with
``prompt_field`` a plain prompt, named by its ``id_field``. :func:`run_on_ray` is what
``smolgen batch --ray ADDRESS`` runs: the same file job, resumable the same way, with the
requests sent to a cluster in chunks and the answers appended as they come back.

Needs the ``ray`` extra (``pip install 'smolgen[ray]'``) and the ``serve`` one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batches import (
    BatchStats,
    FileJob,
    Line,
    batch,
    custom_id_of,
    invalid_line_record,
    not_a_request,
    parse_line,
)
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    import numpy as np

#: The output columns, as ``smolgen batch`` writes each record's keys.
COLUMNS = ("id", "custom_id", "response", "error")
#: Requests sent to the cluster at a time: the driver holds one chunk, and the output file
#: gains each chunk's answers as they come back.
CHUNK_REQUESTS = 4096


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError(
            "running on Ray needs the 'ray' extra: pip install 'smolgen[ray]'"
        ) from None
    return ray


class Generator:
    """One model per Ray actor, answering batches of rows (see the module's text)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        threads: int | None = None,
        concurrency: int = 8,
        max_tokens_default: int = 512,
        model_id: str | None = None,
        prompt_field: str | None = None,
        id_field: str | None = None,
        system: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        import smolgen

        from .cli.serve import served_name

        if prompt_field is not None and id_field is None:
            raise InvalidArgumentError("plain prompts on Ray need an id_field to name each row")
        if threads is None:
            threads = _actor_cpus()
        self.model = smolgen.load(model, threads=threads)
        self.model_id = model_id or served_name(model or smolgen.DEFAULT_MODEL)
        self.concurrency, self.max_tokens_default = concurrency, max_tokens_default
        self.prompt_field, self.id_field = prompt_field, id_field
        self.system, self.settings = system, settings

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        from .prompt_rows import row_request

        count = len(next(iter(rows.values()))) if rows else 0
        requests: list[Any] = []
        for i in range(count):
            if self.prompt_field is None:
                if "request" not in rows:
                    raise InvalidArgumentError("rows need a 'request' column (or a prompt_field)")
                requests.append(parse_line(_text(rows["request"][i])))
            else:
                row = {name: _value(values[i]) for name, values in rows.items()}
                requests.append(
                    row_request(
                        i + 1,
                        row,
                        self.prompt_field,
                        self.id_field,
                        self.system,
                        self.settings or {},
                    )
                )
        records = batch(
            self.model,
            requests,
            model_id=self.model_id,
            concurrency=self.concurrency,
            max_tokens_default=self.max_tokens_default,
        )
        columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        for record in records:
            columns["id"].append(record["id"])
            columns["custom_id"].append(record["custom_id"])
            columns["response"].append(json.dumps(record["response"], ensure_ascii=False))
            columns["error"].append(json.dumps(record["error"], ensure_ascii=False))
        return {name: np.array(values, dtype=object) for name, values in columns.items()}


def record_of(row: dict[str, Any]) -> dict[str, Any]:
    """An output row of :class:`Generator` as the record ``smolgen batch`` writes."""
    return {
        "id": row["id"],
        "custom_id": row["custom_id"],
        "response": json.loads(row["response"]),
        "error": json.loads(row["error"]),
    }


def run_on_ray(
    address: str,
    model: str | None,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    actors: int = 1,
    threads: int = 1,
    concurrency: int = 8,
    max_tokens_default: int = 512,
    model_id: str | None = None,
    prompt_field: str | None = None,
    id_field: str | None = None,
    system: str | None = None,
    settings: dict[str, Any] | None = None,
    on_record: Callable[[dict[str, Any], BatchStats], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> BatchStats:
    """The file job of :func:`smolgen.run_batch_file`, its requests answered on the Ray
    cluster at ``address`` (``"local"`` starts one on this machine) by ``actors`` actors of
    ``threads`` CPUs each, each loading ``model`` (a path or alias every node can resolve)."""
    if min(actors, threads, concurrency, max_tokens_default) < 1:
        raise InvalidArgumentError("actors, threads, concurrency and max_tokens_default: >= 1")
    ray = _ray()
    rows = {"prompt_field": prompt_field, "id_field": id_field, "system": system}
    job = FileJob(Path(input_path), Path(output_path), on_start, settings=settings, **rows)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, include_dashboard=False)
    generator = {
        "model": model,
        "threads": threads,
        "concurrency": concurrency,
        "max_tokens_default": max_tokens_default,
        "model_id": model_id,
    }
    try:
        with job.writer(on_record) as write:
            for chunk in _chunks(job.lines(), job.done, write):
                dataset = ray.data.from_items([{"request": line} for line in chunk])
                answered = dataset.map_batches(
                    Generator,
                    fn_constructor_kwargs=generator,
                    concurrency=actors,
                    num_cpus=threads,
                    batch_size=max(1, math.ceil(len(chunk) / actors)),
                    batch_format="numpy",
                )
                for row in answered.iter_rows():
                    write(record_of(row))
    finally:
        if started_here:
            ray.shutdown()
    return job.stats


def _chunks(
    lines: Iterator[tuple[int, Line]], done: set[str], write: Callable[[dict[str, Any]], None]
) -> Iterator[list[str]]:
    """The requests not yet answered, as JSON text, :data:`CHUNK_REQUESTS` at a time. A line
    that is not a request needs no model: its error record is written here at once."""
    chunk: list[str] = []
    for n, line in lines:
        request = parse_line(line)
        custom_id = custom_id_of(n, request)
        if custom_id in done:
            continue
        problem = not_a_request(request)
        if problem is not None:
            write(invalid_line_record(custom_id, problem))
            continue
        chunk.append(json.dumps(request, ensure_ascii=False))
        if len(chunk) == CHUNK_REQUESTS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _actor_cpus() -> int:
    """The CPUs Ray gave this actor (one outside Ray)."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:  # not in a Ray worker: the default of a plain process
        return 1
    return max(1, int(cpus))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _value(value: Any) -> Any:
    """A numpy scalar as the Python value it holds."""
    return value.item() if hasattr(value, "item") else value
