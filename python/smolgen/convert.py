"""Writing a model file in the type you want: ``smolgen.quantize`` / ``smolgen quantize``.

From a Hugging Face directory (f32, f16 or bf16 safetensors) or another GGUF, to a GGUF that
llama.cpp and smolgen both load: llama.cpp's metadata keys, its per-tensor mixes (a Q4_K_M file
keeps 6 bits where quantization hurts most) and ggml's reference rounding, so the file is the
one llama.cpp's converter and ``llama-quantize`` would write from the same weights.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import _core
from .hub import resolve


@dataclass(frozen=True)
class TensorConversion:
    """One tensor: its name, shape (outermost first), the ggml type it was stored in and the
    one it was written in, and its bytes in the new file."""

    name: str
    shape: tuple[int, ...]
    stored: str
    written: str
    bytes: int


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    file_type: str
    input_bytes: int
    output_bytes: int
    tensors: tuple[TensorConversion, ...]

    def type_counts(self) -> dict[str, int]:
        """How many tensors went into each ggml type."""
        return dict(Counter(t.written for t in self.tensors).most_common())


def file_types() -> list[str]:
    """llama-quantize's names of the file types :func:`quantize` writes."""
    return _core.file_types()


def quantize(
    model: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    file_type: str = "Q4_K_M",
    *,
    threads: int | None = None,
    allow_requantize: bool = False,
    progress: Callable[[int, int, str, str, str], object] | None = None,
) -> QuantizeResult:
    """Writes ``model`` (a ``.gguf``, a Hugging Face directory, an alias or a repo id) to the
    GGUF file ``output`` as ``file_type`` (any case: ``Q4_K_M``, ``Q8_0``, ``BF16``, ...; see
    :func:`file_types`). A source that is already quantized is refused unless
    ``allow_requantize`` (its rounding errors would compound). ``progress(i, n, name, stored,
    written)`` is called after each tensor. The file appears at ``output`` only once complete.
    """
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    source = resolve(model)
    out = Path(output)
    report = _core.quantize_model(
        str(source), str(out), file_type, threads, allow_requantize, progress
    )
    return QuantizeResult(
        path=out,
        file_type=report["file_type"],
        input_bytes=report["input_bytes"],
        output_bytes=report["output_bytes"],
        tensors=tuple(
            TensorConversion(t["name"], tuple(t["shape"]), t["from"], t["to"], t["bytes"])
            for t in report["tensors"]
        ),
    )
