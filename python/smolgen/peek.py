"""Reading the model's next-token distribution: what an API hides.

``peek`` ranks the candidates for the next token and measures how sure the model is; ``score``
gives the log-probability of every token of a text given what precedes it. Both read the logits
of one forward pass (``Model.logits``); nothing is sampled. A text is tokenized as ``generate``
tokenizes a prompt (BOS first when the model asks for it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .model import Model

# Under this top-1 probability a distribution counts as flat: the model is guessing.
FLAT_TOP1 = 0.25


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Candidate:
    """One possible next token."""

    id: int
    piece: str
    probability: float
    logprob: float


@dataclass(frozen=True)
class Peek:
    """The next-token distribution after a prompt, summarised."""

    candidates: list[Candidate]
    entropy_bits: float
    """Shannon entropy of the whole distribution: 0 when certain, log2(vocab) when uniform."""
    top1_probability: float
    margin: float
    """Probability of the first candidate minus that of the second."""

    @property
    def is_flat(self) -> bool:
        """True when no token is likely: the model is uncertain here."""
        return self.top1_probability < FLAT_TOP1

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": [c.__dict__ for c in self.candidates],
            "entropy_bits": self.entropy_bits,
            "top1_probability": self.top1_probability,
            "margin": self.margin,
            "is_flat": self.is_flat,
        }


@dataclass(frozen=True)
class TokenScore:
    id: int
    piece: str
    logprob: float
    """log p(token | the tokens before it). The first token has no context and is not scored."""


@dataclass(frozen=True)
class Score:
    """How likely the model finds a text, token by token."""

    tokens: list[TokenScore] = field(default_factory=list)

    @property
    def total_logprob(self) -> float:
        return float(sum(t.logprob for t in self.tokens))

    @property
    def perplexity(self) -> float:
        """exp of the mean negative log-probability per scored token."""
        if not self.tokens:
            return math.nan
        return math.exp(-self.total_logprob / len(self.tokens))

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": [t.__dict__ for t in self.tokens],
            "total_logprob": self.total_logprob,
            "perplexity": self.perplexity,
        }


def peek(model: Model, prompt: str | Sequence[int], top_k: int = 5) -> Peek:
    if top_k < 1:
        raise InvalidArgumentError(f"top_k must be at least 1, got {top_k}")
    logprobs = log_softmax(model.logits(prompt))
    probs = np.exp(logprobs)
    k = min(top_k, probs.size)
    top = np.argpartition(-logprobs, k - 1)[:k]
    top = top[np.lexsort((top, -logprobs[top]))]  # by probability, then id
    tokenizer = model.tokenizer
    candidates = [
        Candidate(int(i), tokenizer.piece(int(i)).text, float(probs[i]), float(logprobs[i]))
        for i in top
    ]
    nonzero = probs > 0
    entropy = float(-(probs[nonzero] * logprobs[nonzero]).sum() / math.log(2))
    second = candidates[1].probability if len(candidates) > 1 else 0.0
    return Peek(candidates, entropy, candidates[0].probability, candidates[0].probability - second)


def score(model: Model, text: str | Sequence[int]) -> Score:
    # A text reads as generate reads a prompt: BOS first when the model asks for it, and one
    # too long to fit is refused before it is tokenized.
    if isinstance(text, str):
        model.check_prompt_length(text)
        ids = model.tokenizer.encode_prompt(text)
    else:
        ids = list(text)
    if len(ids) < 2:
        return Score([])
    logprobs = log_softmax(model.logits(ids, positions="all"))
    tokenizer = model.tokenizer
    scored = [
        TokenScore(tok, tokenizer.piece(tok).text, float(logprobs[pos - 1, tok]))
        for pos, tok in enumerate(ids)
        if pos > 0
    ]
    return Score(scored)
