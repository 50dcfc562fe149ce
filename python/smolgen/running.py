"""The servers running on this machine (``smolgen ps``): each ``smolgen serve`` records itself in
``$SMOLGEN_HOME/run`` while it serves and removes its record when it stops; a record whose
process is gone (killed) is dropped the next time the list is read."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .hub import cache_dir


def run_dir() -> Path:
    return cache_dir() / "run"


@contextmanager
def recorded_server(url: str, model_id: str, model_path: str) -> Iterator[Path]:
    """Records this process as a server of ``model_id`` at ``url`` for as long as the block
    runs."""
    record = run_dir() / f"serve-{os.getpid()}.json"
    entry = {
        "pid": os.getpid(),
        "url": url,
        "model": model_id,
        "path": model_path,
        "started": time.time(),
    }
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        tmp.replace(record)
    except OSError:
        pass  # a read-only cache: the server runs all the same, unlisted
    try:
        yield record
    finally:
        record.unlink(missing_ok=True)


def running_servers() -> list[dict[str, Any]]:
    """The recorded servers whose process is alive, oldest first."""
    servers = []
    for record in sorted(run_dir().glob("serve-*.json")):
        try:
            entry = json.loads(record.read_text())
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        if _alive(pid):
            servers.append(entry)
        else:
            record.unlink(missing_ok=True)
    return sorted(servers, key=lambda e: e.get("started", 0))


def _alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # signal 0 would end the process there; records go when servers stop
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    return True
