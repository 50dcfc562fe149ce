"""The sampler, step by step, in plain NumPy: the readable reference for the fused Rust sampler.

The fused sampler in ``smolgen-core`` does all of this in one pass over the vocabulary without
sorting it; this module does each step the obvious way, one short function per step, so a reader
can check each against its definition. The tests hold the two to the same distributions.

The steps, in this order (the fused sampler's order too):

1. :func:`apply_logit_bias` -- ``logit[id] += bias`` (OpenAI ``logit_bias``).
2. :func:`apply_repetition_penalty` -- positive logits of the tokens seen are divided by the
   penalty, negative ones multiplied by it (Keskar et al. 2019, "CTRL"; Hugging Face
   ``RepetitionPenaltyLogitsProcessor``).
3. :func:`apply_frequency_presence_penalties` --
   ``logit -= count * frequency_penalty + (count > 0) * presence_penalty`` (OpenAI).
4. temperature 0 is greedy: the argmax of those logits, lowest id on ties (:func:`greedy`).
5. :func:`apply_temperature` -- ``logit / temperature``.
6. :func:`top_k_filter` -- keep the k highest logits, the lower id first on ties.
7. :func:`softmax`.
8. :func:`top_p_filter` -- nucleus sampling (Holtzman et al. 2019, "The Curious Case of Neural
   Text Degeneration"): the smallest set of most probable tokens reaching probability p.
9. :func:`min_p_filter` -- drop tokens below ``min_p`` times the top probability (Nguyen et al.
   2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs").
10. renormalise (:func:`process` returns this), then draw (:func:`sample`).

Tokens seen: the repetition penalty covers the prompt (``history``) and the generated tokens
(the Hugging Face convention); the frequency and presence penalties cover the generated tokens
only (the OpenAI convention).

Numerics: steps 1-3 keep the logits' dtype (float32, as the model emits them), so they round
exactly as the fused sampler does; from the temperature on everything is float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._core import _SamplingOptions

__all__ = [
    "Settings",
    "apply_frequency_presence_penalties",
    "apply_logit_bias",
    "apply_repetition_penalty",
    "apply_temperature",
    "greedy",
    "min_p_filter",
    "process",
    "sample",
    "softmax",
    "top_k_filter",
    "top_p_filter",
    "validate_settings",
]

FloatArray = npt.NDArray[np.floating]

#: OpenAI's range for ``frequency_penalty`` and ``presence_penalty``.
PENALTY_RANGE = (-2.0, 2.0)


def apply_logit_bias(logits: FloatArray, logit_bias: Mapping[int, float]) -> FloatArray:
    """Step 1: add ``logit_bias[id]`` to ``logits[id]`` for every id in the mapping."""
    out = logits.copy()
    for token, bias in logit_bias.items():
        out[token] += bias
    return out


def apply_repetition_penalty(
    logits: FloatArray, tokens: Iterable[int], penalty: float
) -> FloatArray:
    """Step 2: for every distinct token in ``tokens``, divide its logit by ``penalty`` if it is
    positive, multiply it by ``penalty`` otherwise. A penalty above 1 makes every seen token
    less likely, whatever the sign of its logit; each token is penalised once, however often
    it was seen."""
    out = logits.copy()
    seen = np.unique(np.fromiter(tokens, dtype=np.int64))
    values = out[seen]
    out[seen] = np.where(values > 0, values / penalty, values * penalty)
    return out


def apply_frequency_presence_penalties(
    logits: FloatArray,
    generated: Sequence[int],
    frequency_penalty: float,
    presence_penalty: float,
) -> FloatArray:
    """Step 3: subtract ``count * frequency_penalty + (count > 0) * presence_penalty`` from each
    logit, ``count`` being how many times the token was generated. The amount is computed in
    float64 and rounded once to the logits' dtype."""
    counts = np.bincount(np.asarray(generated, dtype=np.int64), minlength=logits.size)
    penalty = counts * frequency_penalty + (counts > 0) * presence_penalty
    return logits - penalty.astype(logits.dtype)


def greedy(logits: FloatArray) -> FloatArray:
    """Step 4, for temperature 0: probability 1 on the argmax (the lowest id on ties)."""
    probs = np.zeros(logits.size)
    probs[int(np.argmax(logits))] = 1.0
    return probs


def apply_temperature(logits: FloatArray, temperature: float) -> FloatArray:
    """Step 5: divide by ``temperature`` (> 0), in float64. Below 1 sharpens the distribution,
    above 1 flattens it."""
    return np.asarray(logits, dtype=np.float64) / temperature


def top_k_filter(logits: FloatArray, k: int) -> FloatArray:
    """Step 6: keep the ``k`` highest logits and set the rest to -inf; on ties the lower id is
    kept. ``k == 0`` or ``k >= len(logits)`` keeps everything."""
    if k == 0 or k >= logits.size:
        return logits
    order = np.argsort(-logits, kind="stable")  # stable: equal logits stay in id order
    out = np.full_like(logits, -np.inf)
    out[order[:k]] = logits[order[:k]]
    return out


def softmax(logits: FloatArray) -> FloatArray:
    """Step 7: ``exp(logit - max) / sum(exp(logit - max))``; -inf logits get probability 0."""
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def top_p_filter(probs: FloatArray, top_p: float) -> FloatArray:
    """Step 8, nucleus sampling (Holtzman et al. 2019): keep the smallest set of most probable
    tokens whose cumulative probability reaches ``top_p``, zero the rest (not renormalised).
    The most probable token always stays; ties are ordered by id; ``top_p == 1`` keeps
    everything."""
    if top_p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    n_keep = min(int(np.searchsorted(cumulative, top_p, side="left")) + 1, probs.size)
    out = np.zeros_like(probs)
    out[order[:n_keep]] = probs[order[:n_keep]]
    return out


def min_p_filter(probs: FloatArray, min_p: float) -> FloatArray:
    """Step 9, min-p (Nguyen et al. 2024): zero the tokens whose probability is below
    ``min_p`` times the largest probability (not renormalised)."""
    if min_p == 0.0:
        return probs
    return np.where(probs < min_p * probs.max(), 0.0, probs)


@dataclass(frozen=True)
class Settings:
    """The sampling settings, each at the value that switches its step off (temperature 1
    leaves the logits as they are). The reference's own statement of them; the fused sampler
    states them once in ``smolgen-core`` (``SamplingParams``), and the tests hold the two to the
    same distributions."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Settings:
        """The settings given as keywords (``generate``'s sampling keywords); one left out or
        ``None`` keeps its default, an unknown one is a ``TypeError``."""
        return cls(**{name: value for name, value in settings.items() if value is not None})

    def validate(self, vocab_size: int) -> None:
        """Raise ``InvalidArgumentError`` naming the first setting outside its domain.

        temperature: finite, >= 0 (0 is greedy). top_k: an int >= 0 (0, or any k >= the
        vocabulary size, keeps everything). top_p: in (0, 1]. min_p: in [0, 1].
        repetition_penalty: finite, > 0. frequency_penalty, presence_penalty: in [-2, 2].
        logit_bias: token ids in the vocabulary, finite biases.
        """
        t, top_k = self.temperature, self.top_k
        if not (math.isfinite(t) and t >= 0):
            raise InvalidArgumentError(f"temperature must be a finite number >= 0, got {t}")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise InvalidArgumentError(f"top_k must be an integer >= 0, got {top_k!r}")
        if not 0 < self.top_p <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise InvalidArgumentError(f"min_p must be in [0, 1], got {self.min_p}")
        penalty = self.repetition_penalty
        if not (math.isfinite(penalty) and penalty > 0):
            raise InvalidArgumentError(
                f"repetition_penalty must be a finite number > 0, got {penalty}"
            )
        low, high = PENALTY_RANGE
        for name, value in (
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ):
            if not low <= value <= high:
                raise InvalidArgumentError(f"{name} must be in [{low:g}, {high:g}], got {value}")
        for token, bias in self.logit_bias.items():
            _check_tokens("logit_bias", [token], vocab_size)
            if not math.isfinite(bias):
                raise InvalidArgumentError(
                    f"logit_bias for token {token} must be finite, got {bias}"
                )


def process(
    logits: npt.ArrayLike,
    *,
    history: Sequence[int] = (),
    generated: Sequence[int] = (),
    **settings: Unpack[_SamplingOptions],
) -> FloatArray:
    """Steps 1-10: the distribution the next token is drawn from.

    ``logits`` has one entry per vocabulary token (NaN and +inf are rejected; -inf masks a
    token). ``history`` is the prompt's token ids, ``generated`` the ids sampled so far; see
    the module docstring for which penalty reads which. ``settings``: the fields of
    :class:`Settings` (``generate``'s sampling keywords). Returns float64 probabilities over
    the whole vocabulary, zero for every dropped token, summing to 1. Raises
    ``InvalidArgumentError`` (a ``ValueError``) for a setting outside its domain.
    """
    logits = np.asarray(logits)
    if logits.ndim != 1 or logits.size == 0 or not np.issubdtype(logits.dtype, np.floating):
        raise InvalidArgumentError("logits must be a non-empty 1-D array of floats")
    vocab_size = logits.size
    s = Settings.of(settings)
    s.validate(vocab_size)
    _check_tokens("history", history, vocab_size)
    _check_tokens("generated", generated, vocab_size)
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise InvalidArgumentError("logits must not contain NaN or +inf")

    x = apply_logit_bias(logits, s.logit_bias)
    x = apply_repetition_penalty(x, [*history, *generated], s.repetition_penalty)
    x = apply_frequency_presence_penalties(x, generated, s.frequency_penalty, s.presence_penalty)
    if np.isposinf(x).any():
        raise InvalidArgumentError("a logit overflowed to +inf after the logit bias and penalties")
    if np.isneginf(x).all():
        raise InvalidArgumentError("every logit is -inf: no token can be sampled")
    if s.temperature == 0.0:
        return greedy(x)

    z = apply_temperature(x, s.temperature)
    z = top_k_filter(z, s.top_k)
    probs = softmax(z)
    probs = top_p_filter(probs, s.top_p)
    probs = min_p_filter(probs, s.min_p)
    return probs / probs.sum()


def sample(probs: FloatArray, rng: np.random.Generator) -> int:
    """Step 10: draw one token id from ``probs`` (as returned by :func:`process`)."""
    return int(rng.choice(probs.size, p=probs))


def validate_settings(vocab_size: int, **settings: Unpack[_SamplingOptions]) -> None:
    """Raise ``InvalidArgumentError`` naming the first setting outside its domain (see
    :meth:`Settings.validate`)."""
    Settings.of(settings).validate(vocab_size)


def _check_tokens(what: str, tokens: Iterable[int], vocab_size: int) -> None:
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise InvalidArgumentError(f"{what}: token ids must be integers, got {token!r}")
        if not 0 <= token < vocab_size:
            raise InvalidArgumentError(
                f"{what}: token id {token} is outside the vocabulary (size {vocab_size})"
            )
