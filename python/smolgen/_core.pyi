# Type stubs for the Rust extension module `smolgen._core`.
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, TypedDict, final, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Self, Unpack, disjoint_base

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
    "check_context",
    "file_types",
    "json_layout",
    "kernel_path",
    "kernel_paths",
    "measure_read_bandwidth",
    "percentile",
    "quantize",
    "quantize_model",
    "sampler_distribution",
    "sampler_draws",
    "step_streams",
    "weight_types",
]

__version__: str

# The settings' keywords, typed once (static only: nothing of that name exists at run time).
# The core's `SamplingParams` and `GenerateOptions` hold their defaults (shown) and domains; the
# binding reads the keywords in `options.rs`. Each may be left out or None: the default.
class _SamplingOptions(TypedDict, total=False):
    temperature: float | None  # 1.0; 0 is greedy
    top_k: int | None  # 0: off
    top_p: float | None  # 1.0: off
    min_p: float | None  # 0.0: off
    repetition_penalty: float | None  # 1.0: off
    frequency_penalty: float | None  # 0.0, in [-2, 2]
    presence_penalty: float | None  # 0.0, in [-2, 2]
    logit_bias: Mapping[int, float] | None  # {token id: bias}

class _GenerateOptions(_SamplingOptions, total=False):
    seed: int | None  # from the system's entropy (the sampler hooks take their own)
    max_tokens: int | None  # 256, or what is left of the context window
    stop: str | Sequence[str] | None  # none
    logprobs: int | None  # off; N: each token's log-prob and N alternatives (0..20)
    prefix_cache: bool | None  # True
    # Structured output, one at most: the text must match it (off by default).
    json_schema: dict[str, Any] | str | None  # a JSON Schema (or its JSON text)
    regex: str | None  # the whole text matches this regular expression
    grammar: str | None  # a Lark grammar (llguidance's dialect); `start` is the text

@final
class TokenPiece:
    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def bytes(self) -> bytes: ...

@disjoint_base
class Tokenizer:
    def __new__(cls, source: str | PathLike[str] | Tokenizer) -> Self: ...
    def encode(self, text: str, special: bool = False) -> list[int]: ...
    def encode_prompt(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
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
    def __len__(self) -> int: ...

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
    @property
    def constraint_s(self) -> float: ...
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

@disjoint_base
class Model:
    def __new__(
        cls,
        path: str | PathLike[str],
        device: str = "cpu",
        dtype: str | None = None,
        prefix_cache_bytes: int | None = None,
        threads: int | None = None,
        quantize: str | None = None,
    ) -> Self: ...
    def prefix_cache_stats(self) -> dict[str, int]: ...
    def configure_prefix_cache(
        self, capacity_bytes: int | None = None, clear: bool = False
    ) -> None: ...
    @property
    def info(self) -> dict[str, Any]: ...
    @property
    def context_length(self) -> int: ...
    @property
    def longest_token_bytes(self) -> int: ...
    def check_prompt_length(
        self, text: str, subject: Literal["prompt", "messages"] = "prompt"
    ) -> None: ...
    @property
    def tokenizer(self) -> Tokenizer: ...
    def tokenize(self, text: str, special: bool = False) -> list[int]: ...
    def detokenize(self, ids: Iterable[int]) -> str: ...
    def tokens(self, text: str, special: bool = False) -> list[TokenPiece]: ...
    def logits(
        self, prompt: str | Iterable[int], positions: Literal["last", "all"] = "last"
    ) -> npt.NDArray[np.float32]: ...
    def attention(
        self, prompt: str | Iterable[int], layers: Iterable[int] | None = None
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def generate(
        self,
        prompt: str | Iterable[int],
        *,
        stream: Literal[False] = False,
        **options: Unpack[_GenerateOptions],
    ) -> Completion: ...
    @overload
    def generate(
        self,
        prompt: str | Iterable[int],
        *,
        stream: Literal[True],
        **options: Unpack[_GenerateOptions],
    ) -> CompletionStream: ...
    @overload
    def generate(
        self, prompt: str | Iterable[int], *, stream: bool, **options: Unpack[_GenerateOptions]
    ) -> Completion | CompletionStream: ...

def sampler_distribution(
    logits: npt.NDArray[np.float32],
    *,
    prompt_tokens: Sequence[int] = ...,
    generated: Sequence[int] = ...,
    **sampling: Unpack[_SamplingOptions],
) -> list[tuple[int, float]]: ...
def sampler_draws(
    logits: npt.NDArray[np.float32],
    n: int,
    *,
    seed: int,
    prompt_tokens: Sequence[int] = ...,
    generated: Sequence[int] = ...,
    **sampling: Unpack[_SamplingOptions],
) -> list[int]: ...
def check_context(
    context_length: int,
    prompt_tokens: int,
    max_tokens: int | None = None,
    subject: Literal["prompt", "messages"] = "prompt",
) -> int: ...
def percentile(values: Sequence[float], q: float) -> float | None: ...
def json_layout() -> str: ...
def kernel_path() -> str: ...
def kernel_paths() -> list[str]: ...
def measure_read_bandwidth(
    threads: int, megabytes: int | None = None, repeats: int | None = None
) -> float: ...
def quantize(type_name: str, values: npt.NDArray[np.float32]) -> bytes: ...
def weight_types() -> list[str]: ...
def quantize_model(
    input: str,
    output: str,
    file_type: str,
    threads: int | None = None,
    allow_requantize: bool = False,
    progress: Callable[[int, int, str, str, str], object] | None = None,
) -> dict[str, Any]: ...
def file_types() -> list[str]: ...
def step_streams(streams: Sequence[CompletionStream]) -> list[Chunk | Exception | None]: ...
