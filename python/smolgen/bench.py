"""Throughput measured on this machine, for the cost model and for sizing a device.

One greedy generation after a warm-up: decode tokens/s counts the tokens after the first (the
first one is prefill's), as llama.cpp and candle's examples report it.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from .model import Completion, Model, load

_PARAGRAPH = (
    "The history of computing is a story of ever smaller machines doing ever more work. "
    "Early computers filled rooms and were programmed with switches and punched cards. "
)


def prompt_ids(model: Model, n_tokens: int) -> list[int]:
    """A deterministic prompt of exactly ``n_tokens`` tokens of ordinary English."""
    ids: list[int] = []
    while len(ids) < n_tokens:
        ids += model.tokenize(_PARAGRAPH)
    return ids[:n_tokens]


def fixed_length_decode(
    model: Model, ids: list[int], gen_tokens: int, **options: Any
) -> Completion:
    """A greedy generation of exactly ``gen_tokens`` tokens: end-of-generation tokens are
    suppressed so that every run does the same work. Returns the Completion."""
    no_stop = {token: -100.0 for token in model.tokenizer.end_of_generation_ids}
    return model.generate(ids, max_tokens=gen_tokens, temperature=0, logit_bias=no_stop, **options)


def measured_throughput(
    model: str | os.PathLike[str] | Model | None = None,
    *,
    prompt_tokens: int = 16,
    gen_tokens: int = 64,
    repeats: int = 3,
) -> float:
    """Median decode tokens/s of ``repeats`` greedy generations of ``gen_tokens`` tokens.

    Every run decodes the same number of tokens (see :func:`fixed_length_decode`).
    """
    m = model if isinstance(model, Model) else load(model, progress=False)
    ids = prompt_ids(m, prompt_tokens)
    fixed_length_decode(m, ids, 4)  # warm-up
    rates = [
        fixed_length_decode(m, ids, gen_tokens).timings.decode_tokens_per_s
        for _ in range(max(1, repeats))
    ]
    return statistics.median(rates)
