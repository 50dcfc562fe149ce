# Type stubs for the Rust extension module `smolgen._core`.
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "Chunk",
    "Completion",
    "CompletionStream",
    "Model",
    "Timings",
    "TokenLogprob",
    "TokenPiece",
    "Tokenizer",
    "Usage",
    "__version__",
    "cpu_features",
    "kernel_paths",
    "measure_read_bandwidth",
    "sampler_distribution",
    "sampler_draws",
    "step_streams",
]

__version__: str

@final
class TokenPiece:
    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def bytes(self) -> bytes: ...

@final
class Tokenizer:
    @staticmethod
    def from_file(path: str | PathLike[str]) -> Tokenizer: ...
    def encode(self, text: str, special: bool = False) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def tokens(self, text: str, special: bool = False) -> list[TokenPiece]: ...
    def piece(self, id: int) -> TokenPiece: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_id(self) -> int | None: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def end_of_generation_ids(self) -> list[int]: ...
    @property
    def chat_template(self) -> str | None: ...

@final
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    def to_dict(self) -> dict[str, Any]: ...

@final
class Timings:
    @property
    def prefill_s(self) -> float: ...
    @property
    def ttft_s(self) -> float: ...
    @property
    def decode_s(self) -> float: ...
    @property
    def decode_steps_s(self) -> list[float]: ...
    @property
    def decode_p50_s(self) -> float | None: ...
    @property
    def decode_p95_s(self) -> float | None: ...
    @property
    def decode_max_s(self) -> float | None: ...
    @property
    def prefill_tokens_per_s(self) -> float: ...
    @property
    def decode_tokens_per_s(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class TokenLogprob:
    id: int
    token: str
    bytes: bytes
    logprob: float
    top_logprobs: list[TokenLogprob]
    def to_dict(self) -> dict[str, Any]: ...

@final
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    stop_sequence: str | None
    usage: Usage
    timings: Timings
    logprobs: list[TokenLogprob] | None
    kv_cache_bytes: int
    def to_dict(self) -> dict[str, Any]: ...

@final
class Chunk:
    text: str
    token_id: int
    finish_reason: Literal["stop", "length"] | None
    logprob: TokenLogprob | None
    def __iter__(self) -> Iterator[str | int]: ...

@final
class CompletionStream:
    def __iter__(self) -> CompletionStream: ...
    def __next__(self) -> Chunk: ...
    def close(self) -> None: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def completion(self) -> Completion | None: ...

@final
class Model:
    @staticmethod
    def load(
        path: str | PathLike[str],
        device: str = "cpu",
        dtype: str | None = None,
        prefix_cache_bytes: int | None = None,
        threads: int | None = None,
    ) -> Model: ...
    def prefix_cache_stats(self) -> dict[str, int]: ...
    def configure_prefix_cache(
        self, capacity_bytes: int | None = None, clear: bool = False
    ) -> None: ...
    @property
    def info(self) -> dict[str, Any]: ...
    @property
    def tokenizer(self) -> Tokenizer: ...
    def tokenize(self, text: str, special: bool = True) -> list[int]: ...
    def detokenize(self, ids: Sequence[int]) -> str: ...
    def tokens(self, text: str, special: bool = True) -> list[TokenPiece]: ...
    def logits(
        self, prompt: str | Sequence[int], positions: Literal["last", "all"] = "last"
    ) -> npt.NDArray[np.float32]: ...
    def attention(
        self, prompt: str | Sequence[int], layers: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]: ...
    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias: Mapping[int, float] | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        logprobs: int | None = None,
        stream: bool = False,
        prefix_cache: bool = True,
    ) -> Completion | CompletionStream: ...

def sampler_distribution(
    logits: npt.NDArray[np.float32],
    *,
    prompt_tokens: Sequence[int] = ...,
    generated: Sequence[int] = ...,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    logit_bias: Mapping[int, float] | None = None,
) -> list[tuple[int, float]]: ...
def sampler_draws(
    logits: npt.NDArray[np.float32],
    n: int,
    *,
    seed: int,
    prompt_tokens: Sequence[int] = ...,
    generated: Sequence[int] = ...,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    logit_bias: Mapping[int, float] | None = None,
) -> list[int]: ...
def cpu_features() -> str: ...
def kernel_paths() -> list[str]: ...
def measure_read_bandwidth(threads: int, megabytes: int = 256, repeats: int = 5) -> float: ...
def step_streams(streams: Sequence[CompletionStream]) -> list[Chunk | Exception | None]: ...
