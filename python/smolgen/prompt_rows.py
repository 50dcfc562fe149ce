"""Rows of plain prompts as batch requests: one column of a JSONL, CSV or Parquet file, each
row a chat request with the same settings, so a list of texts to classify or summarise needs no
conversion to run as a batch job (:mod:`smolgen.batches`).

A row's ``custom_id`` is its ``id_field`` when given, else ``row-N`` (its 1-based number among
the data rows), so a resumed run names the same rows the same way. A row whose prompt is
missing, empty or not text is answered as an error, and the job goes on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError
from .limits import MAX_REQUEST_BYTES

#: The file types read, by suffix.
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
#: The longest input line (or prompt) a batch job reads: a longer one is answered as an
#: error, unread.
MAX_LINE_BYTES = MAX_REQUEST_BYTES
#: Rows a Parquet file is read in at a time.
_PARQUET_BATCH = 1024


class Unreadable:
    """A row that cannot become a request: why, and its ``custom_id`` when known."""

    def __init__(self, reason: str, custom_id: str | None = None) -> None:
        self.reason, self.custom_id = reason, custom_id


def row_id(n: int) -> str:
    return f"row-{n}"


def numbered_lines(path: Path) -> Iterator[tuple[int, bytes | Unreadable]]:
    """The non-blank lines of ``path`` with their 1-based numbers in the file; a line over
    :data:`MAX_LINE_BYTES` is :class:`Unreadable`, skipped without holding it."""
    with open(path, "rb") as f:
        n = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            n += 1
            if len(raw) > MAX_LINE_BYTES:
                while raw and not raw.endswith(b"\n"):
                    raw = f.readline(1 << 20)
                yield n, Unreadable(f"the line is longer than {MAX_LINE_BYTES} bytes")
            elif raw.strip():
                yield n, raw


def prompt_requests(
    path: Path,
    prompt_field: str,
    *,
    id_field: str | None = None,
    system: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Iterator[tuple[int, dict[str, Any] | Unreadable]]:
    """Each data row of ``path`` (numbered from 1) as a chat request asking ``prompt_field``,
    after ``system`` when given, with the body ``settings`` (``max_tokens``, ``temperature``,
    ...)."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InvalidArgumentError(
            f"{path}: plain prompts are read from {', '.join(FORMATS)} files, by suffix"
        )
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[kind]
    for n, row in enumerate(rows(path, [prompt_field, *([id_field] if id_field else [])]), 1):
        yield n, row_request(n, row, prompt_field, id_field, system, settings or {})


def row_request(
    n: int,
    row: dict[str, Any] | Unreadable,
    prompt_field: str,
    id_field: str | None,
    system: str | None,
    settings: dict[str, Any],
) -> dict[str, Any] | Unreadable:
    if isinstance(row, Unreadable):
        return Unreadable(row.reason, row_id(n))
    custom_id = row_id(n)
    if id_field is not None:
        value = row.get(id_field)
        if value is None or value == "":
            return Unreadable(f"{id_field}: the row has no id", custom_id)
        custom_id = str(value)
    prompt = row.get(prompt_field)
    if not isinstance(prompt, str):
        what = "no" if prompt is None else f"a {type(prompt).__name__}, not a text"
        return Unreadable(f"{prompt_field}: the row has {what} prompt", custom_id)
    if not prompt.strip():  # an empty cell: missing data, not a question
        return Unreadable(f"{prompt_field}: the row's prompt is empty", custom_id)
    if len(prompt) > MAX_LINE_BYTES:
        return Unreadable(
            f"{prompt_field}: the prompt is longer than {MAX_LINE_BYTES} characters", custom_id
        )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "smolgen", "messages": messages, **settings},
    }


def _jsonl_rows(path: Path, fields: list[str]) -> Iterator[dict[str, Any] | Unreadable]:
    for _, raw in numbered_lines(path):
        if isinstance(raw, Unreadable):
            yield raw
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            yield Unreadable("the line is not JSON")
            continue
        yield row if isinstance(row, dict) else Unreadable("the line is not a JSON object")


def _csv_rows(path: Path, fields: list[str]) -> Iterator[dict[str, Any] | Unreadable]:
    # The module's limit is process-wide: raised while this file is read, then given back.
    limit = csv.field_size_limit(MAX_LINE_BYTES)
    try:
        yield from _csv_file_rows(path, fields)
    finally:
        csv.field_size_limit(limit)


def _csv_file_rows(path: Path, fields: list[str]) -> Iterator[dict[str, Any] | Unreadable]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        missing = [name for name in fields if name not in (reader.fieldnames or [])]
        if missing:
            raise InvalidArgumentError(
                f"{path}: no column {missing[0]!r}; the columns are "
                f"{', '.join(reader.fieldnames or []) or 'none'}"
            )
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield Unreadable(f"the row is not readable CSV: {e}")
                continue
            yield dict(row)


def _parquet_rows(path: Path, fields: list[str]) -> Iterator[dict[str, Any] | Unreadable]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgumentError(
            "reading Parquet needs pyarrow: pip install 'smolgen[parquet]'"
        ) from None
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's own error types: not a Parquet file
        raise InvalidArgumentError(f"{path}: not a readable Parquet file ({e})") from None
    names = table.schema_arrow.names
    missing = [name for name in fields if name not in names]
    if missing:
        raise InvalidArgumentError(
            f"{path}: no column {missing[0]!r}; the columns are {', '.join(names)}"
        )
    for chunk in table.iter_batches(batch_size=_PARQUET_BATCH, columns=fields):
        yield from chunk.to_pylist()
