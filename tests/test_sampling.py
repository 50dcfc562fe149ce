"""The sampler: the NumPy reference step by step on hand-worked vectors (``test_reference_*``),
then the fused Rust sampler held to the reference (``test_fused_*``): the same processed
distribution for random logits and settings, draw frequencies that pass a chi-square test
against it, and the same settings rejected."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from smolgen import sampling

NAN = float("nan")
INF = float("inf")


@pytest.fixture(scope="module")
def core() -> Any:
    """The compiled extension: the fused sampler's test hooks."""
    from smolgen import _core

    return _core


def f32(x: float) -> float:
    """``x`` rounded to float32: the fused sampler takes its settings as float32, so the tests
    use values both implementations see exactly."""
    return float(np.float32(x))


# --- the reference, by hand ---------------------------------------------------------------


def test_reference_logit_bias_adds_per_token() -> None:
    logits = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = sampling.apply_logit_bias(logits, {0: 0.5, 2: -3.0})
    np.testing.assert_array_equal(out, [1.5, 2.0, 0.0])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(logits, [1.0, 2.0, 3.0])  # the input is left alone


def test_reference_repetition_penalty_divides_positive_multiplies_negative_once() -> None:
    logits = np.array([2.0, -2.0, 1.0, 0.0, 4.0], dtype=np.float32)
    out = sampling.apply_repetition_penalty(logits, [0, 1, 3, 0, 0], 2.0)
    np.testing.assert_array_equal(out, [1.0, -4.0, 1.0, 0.0, 4.0])
    boosted = sampling.apply_repetition_penalty(logits, [0, 1], 0.5)
    np.testing.assert_array_equal(boosted[:2], [4.0, -1.0])


def test_reference_frequency_presence_penalties_count_generated_tokens() -> None:
    logits = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    out = sampling.apply_frequency_presence_penalties(logits, [0, 0, 0, 2], 0.5, 0.25)
    # token 0: 3 * 0.5 + 0.25; token 1: never generated; token 2: 1 * 0.5 + 0.25.
    np.testing.assert_array_equal(out, [1.0 - 1.75, 1.0, 1.0 - 0.75])
    assert out.dtype == np.float32


def test_reference_temperature_divides_in_float64() -> None:
    out = sampling.apply_temperature(np.array([2.0, 1.0], dtype=np.float32), 0.5)
    np.testing.assert_array_equal(out, [4.0, 2.0])
    assert out.dtype == np.float64


def test_reference_top_k_keeps_the_k_highest_lower_id_first_on_ties() -> None:
    logits = np.array([1.0, 3.0, 3.0, 2.0])
    np.testing.assert_array_equal(sampling.top_k_filter(logits, 2), [-INF, 3.0, 3.0, -INF])
    np.testing.assert_array_equal(sampling.top_k_filter(logits, 1), [-INF, 3.0, -INF, -INF])
    np.testing.assert_array_equal(sampling.top_k_filter(logits, 3), [-INF, 3.0, 3.0, 2.0])
    for off in (0, 4, 100):
        np.testing.assert_array_equal(sampling.top_k_filter(logits, off), logits)


def test_reference_softmax() -> None:
    np.testing.assert_allclose(sampling.softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75])
    np.testing.assert_allclose(sampling.softmax(np.array([1000.0, -INF, 1000.0])), [0.5, 0.0, 0.5])


def test_reference_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = np.array([0.1, 0.5, 0.15, 0.25])
    # Sorted: 0.5 (id 1), 0.25 (id 3), 0.15 (id 2), 0.1 (id 0).
    np.testing.assert_array_equal(sampling.top_p_filter(probs, 0.6), [0.0, 0.5, 0.0, 0.25])
    np.testing.assert_array_equal(sampling.top_p_filter(probs, 0.5), [0.0, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(sampling.top_p_filter(probs, 0.01), [0.0, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(sampling.top_p_filter(probs, 0.8), [0.0, 0.5, 0.15, 0.25])
    np.testing.assert_array_equal(sampling.top_p_filter(probs, 1.0), probs)
    ties = np.array([0.25, 0.25, 0.25, 0.25])
    np.testing.assert_array_equal(sampling.top_p_filter(ties, 0.3), [0.25, 0.25, 0.0, 0.0])


def test_reference_min_p_drops_below_a_fraction_of_the_top() -> None:
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    np.testing.assert_array_equal(sampling.min_p_filter(probs, 0.35), [0.5, 0.3, 0.0, 0.0])
    # 0.15 is not below 0.3 * 0.5: kept.
    np.testing.assert_array_equal(sampling.min_p_filter(probs, 0.3), [0.5, 0.3, 0.15, 0.0])
    np.testing.assert_array_equal(sampling.min_p_filter(probs, 0.0), probs)


def test_reference_process_chains_the_steps_in_order() -> None:
    logits = np.array([2.0, 1.0, 0.5, -1.0], dtype=np.float32)
    probs = sampling.process(
        logits,
        history=[0],
        generated=[1, 1],
        logit_bias={3: 2.0},  # [2, 1, 0.5, 1]
        repetition_penalty=2.0,  # tokens 0 and 1 seen: [1, 0.5, 0.5, 1]
        frequency_penalty=0.5,  # token 1 generated twice: - (2 * 0.5 + 0.5)
        presence_penalty=0.5,  # -> [1, -1, 0.5, 1]
        temperature=0.5,  # [2, -2, 1, 2]
        top_k=3,  # [2, -inf, 1, 2]
        top_p=0.9,  # softmax [0.4223, 0, 0.1554, 0.4223]: 0.84 < 0.9, all three stay
        min_p=0.4,  # 0.1554 < 0.4 * 0.4223: token 2 goes
    )
    np.testing.assert_allclose(probs, [0.5, 0.0, 0.0, 0.5])


def test_reference_process_without_settings_is_the_softmax() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    np.testing.assert_allclose(sampling.process(logits), [0.5, 0.3, 0.2], rtol=1e-6)


def test_reference_prompt_tokens_get_only_the_repetition_penalty() -> None:
    logits = np.array([1.0, 1.0], dtype=np.float32)
    probs = sampling.process(logits, history=[0], frequency_penalty=2.0, presence_penalty=2.0)
    np.testing.assert_allclose(probs, [0.5, 0.5])
    probs = sampling.process(logits, history=[0], repetition_penalty=2.0)
    np.testing.assert_allclose(probs, [1 / (1 + math.exp(0.5)), 1 / (1 + math.exp(-0.5))])


def test_reference_greedy_is_the_argmax_after_penalties() -> None:
    logits = np.array([0.1, 2.0, -1.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(sampling.process(logits, temperature=0.0), [0, 1, 0, 0])
    np.testing.assert_array_equal(
        sampling.process(logits, temperature=0.0, logit_bias={2: 5.0}), [0, 0, 1, 0]
    )
    np.testing.assert_array_equal(
        sampling.process(logits, temperature=0.0, generated=[1], presence_penalty=0.5),
        [0, 0, 0, 1],
    )


def test_reference_masked_tokens_never_survive() -> None:
    logits = np.array([-INF, 0.0, -INF, 1.0], dtype=np.float32)
    probs = sampling.process(logits, top_k=3, min_p=0.01)
    assert probs[0] == probs[2] == 0.0
    assert probs[1] > 0 and probs[3] > 0


def test_reference_sample_draws_from_probs() -> None:
    rng = np.random.default_rng(0)
    assert {sampling.sample(np.array([0.0, 1.0, 0.0]), rng) for _ in range(100)} == {1}
    draws = [sampling.sample(np.array([0.25, 0.0, 0.75]), rng) for _ in range(4000)]
    assert set(draws) == {0, 2}
    assert abs(draws.count(2) / 4000 - 0.75) < 0.03


# --- the settings both implementations reject ----------------------------------------------

VOCAB = 10

BAD_SETTINGS: list[dict[str, Any]] = [
    {"temperature": -0.5},
    {"temperature": NAN},
    {"temperature": INF},
    {"top_k": -1},
    {"top_p": 0.0},
    {"top_p": -0.1},
    {"top_p": 1.5},
    {"top_p": NAN},
    {"min_p": -0.1},
    {"min_p": 1.1},
    {"min_p": NAN},
    {"repetition_penalty": 0.0},
    {"repetition_penalty": -1.0},
    {"repetition_penalty": NAN},
    {"repetition_penalty": INF},
    {"frequency_penalty": 2.5},
    {"frequency_penalty": -2.1},
    {"frequency_penalty": NAN},
    {"presence_penalty": 3.0},
    {"presence_penalty": -2.5},
    {"logit_bias": {VOCAB: 1.0}},
    {"logit_bias": {-1: 1.0}},
    {"logit_bias": {1: INF}},
    {"logit_bias": {1: NAN}},
]

BAD_LOGITS: list[list[float]] = [
    [0.0] * (VOCAB - 1) + [NAN],
    [0.0] * (VOCAB - 1) + [INF],
    [-INF] * VOCAB,
]


def _ids(settings: dict[str, Any]) -> str:
    return (
        ",".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
        )
        or "defaults"
    )


@pytest.mark.parametrize("settings", BAD_SETTINGS, ids=_ids)
def test_reference_rejects_bad_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sampling.process(np.zeros(VOCAB, dtype=np.float32), **settings)


@pytest.mark.parametrize("logits", BAD_LOGITS, ids=["nan", "+inf", "all -inf"])
def test_reference_rejects_bad_logits(logits: list[float]) -> None:
    with pytest.raises(ValueError):
        sampling.process(np.array(logits, dtype=np.float32))


@pytest.mark.parametrize("tokens", [{"history": [VOCAB]}, {"generated": [-1]}], ids=_ids)
def test_reference_rejects_token_ids_outside_the_vocabulary(tokens: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sampling.process(np.zeros(VOCAB, dtype=np.float32), **tokens)


@pytest.mark.parametrize("settings", BAD_SETTINGS, ids=_ids)
def test_fused_rejects_bad_settings(core: Any, settings: dict[str, Any]) -> None:
    logits = np.zeros(VOCAB, dtype=np.float32)
    with pytest.raises(ValueError):
        core.sampler_distribution(logits, **settings)
    with pytest.raises(ValueError):
        core.sampler_draws(logits, 1, seed=0, **settings)


@pytest.mark.parametrize("logits", BAD_LOGITS, ids=["nan", "+inf", "all -inf"])
def test_fused_rejects_bad_logits(core: Any, logits: list[float]) -> None:
    for temperature in (0.0, 1.0):
        with pytest.raises(ValueError):
            core.sampler_distribution(np.array(logits, dtype=np.float32), temperature=temperature)
        with pytest.raises(ValueError):
            core.sampler_draws(np.array(logits, dtype=np.float32), 1, seed=0)


@pytest.mark.parametrize(
    "tokens", [{"prompt_tokens": [VOCAB]}, {"generated": [VOCAB]}, {"generated": [-1]}], ids=_ids
)
def test_fused_rejects_token_ids_outside_the_vocabulary(core: Any, tokens: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        core.sampler_distribution(np.zeros(VOCAB, dtype=np.float32), **tokens)


def test_fused_accepts_the_edges_of_every_range(core: Any) -> None:
    logits = np.linspace(-1, 1, VOCAB, dtype=np.float32)
    edges = {
        "temperature": 0.0,
        "top_p": 1.0,
        "min_p": 1.0,
        "frequency_penalty": -2.0,
        "presence_penalty": 2.0,
        "top_k": 10**6,
        "logit_bias": {VOCAB - 1: -1e30},
    }
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    argmax_only = np.eye(VOCAB)[VOCAB - 1]  # the logits rise: the last token is the argmax
    without_last = np.append(softmax[:-1] / softmax[:-1].sum(), 0.0)
    expected = {
        "temperature": argmax_only,  # greedy
        "top_p": softmax,  # the whole nucleus
        "min_p": argmax_only,  # only the top token reaches 1.0 x the top probability
        "top_k": softmax,  # more than the vocabulary: every token
        "logit_bias": without_last,  # the biased token can never be drawn
    }
    for name, value in edges.items():
        assert_fused_agrees_with_numpy(core, logits, {name: value}, [], [])
        if name in expected:
            reference = sampling.process(logits, **{name: value})
            np.testing.assert_allclose(reference, expected[name], atol=1e-6, err_msg=name)


# --- the fused sampler against the reference -----------------------------------------------


def random_logits(rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    """Normal logits at a random scale; sometimes rounded (ties), sometimes partly masked."""
    logits = rng.normal(0.0, rng.choice([0.5, 3.0, 10.0]), vocab_size)
    if rng.random() < 0.25:
        logits = np.round(logits * 2) / 2
    if rng.random() < 0.2:
        masked = rng.random(vocab_size) < 0.3
        masked[int(np.argmax(logits))] = False
        logits[masked] = -np.inf
    return logits.astype(np.float32)


def random_settings(rng: np.random.Generator, vocab_size: int) -> dict[str, Any]:
    """Each knob off about half the time, otherwise anywhere in (a sensible part of) its range."""

    def maybe(off: float, low: float, high: float) -> float:
        return off if rng.random() < 0.5 else f32(rng.uniform(low, high))

    roll = rng.random()
    temperature = 0.0 if roll < 0.1 else 1.0 if roll < 0.35 else f32(rng.uniform(0.05, 2.5))
    n_bias = int(rng.integers(0, 4))
    return {
        "temperature": temperature,
        "top_k": 0 if rng.random() < 0.5 else int(rng.integers(1, min(200, vocab_size + 10))),
        "top_p": maybe(1.0, 0.05, 1.0),
        "min_p": maybe(0.0, 0.0, 0.5),
        "repetition_penalty": maybe(1.0, 0.5, 2.0),
        "frequency_penalty": maybe(0.0, -2.0, 2.0),
        "presence_penalty": maybe(0.0, -2.0, 2.0),
        "logit_bias": {
            int(t): f32(rng.uniform(-10, 10)) for t in rng.integers(0, vocab_size, n_bias)
        },
    }


def random_tokens(rng: np.random.Generator, vocab_size: int) -> list[int]:
    """Up to 30 ids from a small pool, so that some repeat."""
    pool = rng.integers(0, vocab_size, 8)
    return [int(t) for t in rng.choice(pool, int(rng.integers(0, 31)))]


def assert_fused_agrees_with_numpy(
    core: Any,
    logits: np.ndarray,
    settings: dict[str, Any],
    history: Sequence[int],
    generated: Sequence[int],
) -> None:
    expected = sampling.process(logits, history=history, generated=generated, **settings)
    got = core.sampler_distribution(
        logits, prompt_tokens=list(history), generated=list(generated), **settings
    )
    ids = [token for token, _ in got]
    probs = [p for _, p in got]
    assert len(set(ids)) == len(ids)
    assert all((p, -t) >= (q, -u) for (t, p), (u, q) in itertools.pairwise(got)), (
        "not sorted by probability, then id"
    )
    full = np.zeros(logits.size)
    full[ids] = probs
    np.testing.assert_allclose(full, expected, rtol=0, atol=1e-6, err_msg=str(settings))
    # The same survivors, except that the fused sampler reports float32 probabilities, so it
    # may leave out the very unlikely ones (float32 has nothing below about 1e-45). They are
    # far beyond any draw's reach.
    assert set(np.flatnonzero(expected >= 1e-38)) <= set(ids), settings
    assert set(ids) <= set(np.flatnonzero(expected > 0)), settings


def test_fused_agrees_with_numpy_on_a_small_vocabulary(core: Any) -> None:
    rng = np.random.default_rng(20240501)
    for _ in range(400):
        vocab_size = 50
        assert_fused_agrees_with_numpy(
            core,
            random_logits(rng, vocab_size),
            random_settings(rng, vocab_size),
            random_tokens(rng, vocab_size),
            random_tokens(rng, vocab_size),
        )


def test_fused_agrees_with_numpy_on_the_real_vocabulary(core: Any) -> None:
    rng = np.random.default_rng(49152)
    for _ in range(30):
        vocab_size = 49_152
        assert_fused_agrees_with_numpy(
            core,
            random_logits(rng, vocab_size),
            random_settings(rng, vocab_size),
            random_tokens(rng, vocab_size),
            random_tokens(rng, vocab_size),
        )


def test_fused_agrees_with_numpy_on_typical_chat_settings(core: Any) -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 3.0, 49_152).astype(np.float32)
    history = [int(t) for t in rng.integers(0, 49_152, 384)]
    generated = [int(t) for t in rng.integers(0, 49_152, 128)]
    for settings in (
        {"temperature": f32(0.8), "top_p": f32(0.9)},
        {"top_k": 40},
        {"temperature": f32(0.7), "min_p": f32(0.05)},
        {
            "temperature": f32(0.7),
            "top_k": 50,
            "top_p": f32(0.95),
            "min_p": f32(0.05),
            "repetition_penalty": f32(1.1),
            "frequency_penalty": f32(0.5),
            "presence_penalty": f32(0.3),
            "logit_bias": {11: 5.0, 198: -100.0},
        },
    ):
        assert_fused_agrees_with_numpy(core, logits, settings, history, generated)


# --- draws --------------------------------------------------------------------------------


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square(dof): the regularised upper incomplete gamma
    function Q(dof / 2, statistic / 2), by its series below a + 1 and by its continued fraction
    (modified Lentz) above (Numerical Recipes, section 6.2)."""
    a, x = dof / 2, statistic / 2
    if x <= 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        n = a
        while abs(term) > abs(total) * 1e-16:
            n += 1
            term *= x / n
            total += term
        return 1.0 - total * math.exp(log_prefactor)
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return math.exp(log_prefactor) * h


def test_reference_chi2_helper_matches_published_critical_values() -> None:
    # Critical values at p = 0.001 and p = 0.05 from standard chi-square tables.
    for statistic, dof, p in [(10.828, 1, 0.001), (43.820, 19, 0.001), (30.144, 19, 0.05)]:
        assert chi2_sf(statistic, dof) == pytest.approx(p, rel=1e-3)
    assert chi2_sf(0.0, 5) == 1.0


def chi_square_p_value(draws: Sequence[int], probs: np.ndarray) -> float:
    """Pearson's goodness-of-fit test of ``draws`` against ``probs``; cells expecting fewer
    than 5 draws are pooled. A draw outside the support fails outright."""
    n = len(draws)
    observed = np.bincount(np.asarray(draws), minlength=probs.size)
    assert observed[probs == 0].sum() == 0, "drew a token that cannot survive"
    expected = probs[probs > 0] * n
    observed = observed[probs > 0]
    small = expected < 5
    cells_expected = [*expected[~small], expected[small].sum()]
    cells_observed = [*observed[~small], observed[small].sum()]
    if cells_expected[-1] < 5:  # pool the leftovers with the smallest real cell
        smallest = int(np.argmin(cells_expected[:-1]))
        cells_expected[smallest] += cells_expected.pop()
        cells_observed[smallest] += cells_observed.pop()
    e, o = np.array(cells_expected), np.array(cells_observed)
    statistic = float(((o - e) ** 2 / e).sum())
    return chi2_sf(statistic, len(e) - 1)


DRAW_SETTINGS: list[dict[str, Any]] = [
    {},
    {"temperature": f32(0.7), "top_k": 10},
    {"temperature": f32(1.3), "top_p": f32(0.8)},
    {
        "temperature": f32(0.9),
        "top_p": f32(0.95),
        "min_p": f32(0.05),
        "repetition_penalty": f32(1.3),
        "frequency_penalty": f32(0.4),
        "presence_penalty": f32(0.2),
        "logit_bias": {3: 2.0},
    },
]


@pytest.mark.parametrize("settings", DRAW_SETTINGS, ids=_ids)
def test_fused_draw_frequencies_fit_the_numpy_distribution(
    core: Any, settings: dict[str, Any]
) -> None:
    # Fixed logits and seed: the outcome is the same on every run, and it is a fair test.
    logits = np.random.default_rng(20).normal(0.0, 1.5, 20).astype(np.float32)
    history, generated = [1, 2, 5], [5, 5, 7]
    probs = sampling.process(logits, history=history, generated=generated, **settings)
    draws = core.sampler_draws(
        logits, 20_000, seed=12345, prompt_tokens=history, generated=generated, **settings
    )
    assert len(draws) == 20_000
    assert chi_square_p_value(draws, probs) > 1e-3


def test_the_chi_square_check_catches_a_wrong_distribution(core: Any) -> None:
    logits = np.random.default_rng(20).normal(0.0, 1.5, 20).astype(np.float32)
    draws = core.sampler_draws(logits, 20_000, seed=12345, temperature=f32(0.9))
    assert chi_square_p_value(draws, sampling.process(logits)) < 1e-3


def test_fused_draws_are_fixed_by_the_seed(core: Any) -> None:
    logits = np.random.default_rng(3).normal(0.0, 3.0, 49_152).astype(np.float32)
    settings = {"temperature": f32(0.9), "top_p": f32(0.95)}
    first = core.sampler_draws(logits, 200, seed=42, **settings)
    assert core.sampler_draws(logits, 200, seed=42, **settings) == first
    assert core.sampler_draws(logits, 200, seed=43, **settings) != first


def test_fused_greedy_draws_the_argmax(core: Any) -> None:
    logits = np.array([0.1, 2.0, -1.0, 2.0], dtype=np.float32)
    assert core.sampler_draws(logits, 5, seed=0, temperature=0.0) == [1] * 5
    assert core.sampler_distribution(logits, temperature=0.0) == [(1, 1.0)]
