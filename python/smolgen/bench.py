"""Throughput measured on this machine, for the cost model and for sizing a device.

One greedy generation after a warm-up: decode tokens/s counts the tokens after the first (the
first one is prefill's), as llama.cpp and candle's examples report it.
"""

from __future__ import annotations

import os
import statistics

from .model import Model, load

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


def measured_throughput(
    model: str | os.PathLike[str] | Model | None = None,
    *,
    prompt_tokens: int = 16,
    gen_tokens: int = 64,
    repeats: int = 3,
) -> float:
    """Median decode tokens/s of ``repeats`` greedy generations of ``gen_tokens`` tokens.

    End-of-generation tokens are suppressed so every run decodes the same number of tokens.
    """
    m = model if isinstance(model, Model) else load(model, progress=False)
    ids = prompt_ids(m, prompt_tokens)
    no_stop = {token: -100.0 for token in m.tokenizer.end_of_generation_ids}
    m.generate(ids, max_tokens=4, temperature=0, logit_bias=no_stop)  # warm-up
    rates = [
        m.generate(
            ids, max_tokens=gen_tokens, temperature=0, logit_bias=no_stop
        ).timings.decode_tokens_per_s
        for _ in range(max(1, repeats))
    ]
    return statistics.median(rates)
