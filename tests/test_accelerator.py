"""The model on an accelerator, held to the exact float64 pass over the same weights.

Runs where a GPU build runs: ``SMOLGEN_TEST_DEVICE=cuda pytest`` (a wheel built with
``--features cuda``). There the real-model tests of the other files run on the device too, against
llama.cpp's vectors; these add what only the device can show. Elsewhere they are skipped.

``SMOLGEN_GPU_WEIGHTS`` says how the GPU holds a quantized file's matrices: expanded to f32 (the
default for models up to 2 GiB of them) or f16, or as stored, multiplied by candle's kernels over
8-bit-quantized activations. Each is held to the closeness it promises.
"""

from __future__ import annotations

import numpy as np
import pytest

import smolgen
import tiny_llama
from conftest import TEST_DEVICE
from reference_llama import forward, load_gguf_weights, log_softmax

pytestmark = pytest.mark.skipif(
    TEST_DEVICE == "cpu", reason="SMOLGEN_TEST_DEVICE names no accelerator"
)

PROMPTS = ["The theory of relativity", "Once upon a time", "def fib(n):", "Water boils at"]

# KL divergence from the exact pass, mean over positions, that each way of holding the weights
# stays under (measured on an H200 over the llama.cpp vectors' 146 positions: f32 3e-11,
# f16 1.3e-5, quantized 0.018-0.030; our CPU kernels give 0.004-0.008).
KL_BOUND = {"f32": 1e-8, "f16": 1e-4, "quantized": 0.05}
# The largest difference in a logit between two passes over the same tokens that differ in
# shape (one long pass, or one position at a time): the GEMM's summation order, nothing more.
SHAPE_TOLERANCE = {"f32": 1e-3, "f16": 0.05, "quantized": 3.0}


@pytest.fixture(scope="module")
def dequantized(smollm2_gguf):
    return load_gguf_weights(str(smollm2_gguf))


@pytest.fixture(scope="module")
def exact(dequantized):
    weights, cfg = dequantized
    return lambda ids: log_softmax(forward(weights, cfg, ids, interleaved=True))


def test_the_model_runs_on_the_device(smollm2):
    info = smollm2.info
    assert info["device"].split(":")[0] == TEST_DEVICE.split(":")[0]
    assert info["engine"] == "candle"
    assert info["kv_cache_format"] == "f32"
    asked = info["settings"]["SMOLGEN_GPU_WEIGHTS"]
    # 135M parameters take 0.5 GB as f32: what `auto` gives.
    assert info["gpu_weights"] == ("f32" if asked == "auto" else asked)


def test_logits_are_the_exact_pass_to_the_precision_of_the_weights(smollm2, exact, greedy_vectors):
    """Every position of llama.cpp's five continuations, as KL divergence from the float64 pass
    over the same (dequantized) weights."""
    bound = KL_BOUND[smollm2.info["gpu_weights"]]
    divergences = []
    for case in greedy_vectors:
        ids = case["ids"] + case["greedy"]
        truth = exact(ids)
        ours = log_softmax(smollm2.logits(ids, positions="all").astype(np.float64))
        assert ours.shape == truth.shape
        divergences.extend((np.exp(truth) * (truth - ours)).sum(-1))
    assert float(np.mean(divergences)) < bound
    assert float(np.max(divergences)) < 10 * bound


def test_a_pass_in_slices_is_the_pass_at_once(smollm2):
    """A prompt read at once or up to each position gives each position's logits up to the
    GEMM's summation order (our CPU kernels give the same bits, `test_engine`)."""
    ids = smollm2.tokenize(" ".join(PROMPTS * 40))[:600]
    at_once = smollm2.logits(ids, "all")
    tolerance = SHAPE_TOLERANCE[smollm2.info["gpu_weights"]]
    for n in (1, 7, 300, 513, 600):
        assert np.abs(smollm2.logits(ids[:n], "last") - at_once[n - 1]).max() < tolerance, n


def test_float_weights_give_the_exact_pass(tiny_dir, tiny_weights):
    """A float model's own f32 weights on the device: every position's logits equal the float64
    NumPy pass to f32 accuracy (no reduced-precision products behind the user's back)."""
    model = smolgen.load(tiny_dir, device=TEST_DEVICE, dtype="f32")
    ids = model.tokenize("An exact pass on the device, position by position")
    truth = forward(tiny_weights, tiny_llama.CONFIG, ids, interleaved=False)
    np.testing.assert_allclose(model.logits(ids, positions="all"), truth, atol=2e-4, rtol=1e-4)


def test_generation_streams_and_batched_steps(smollm2):
    """Greedy generation, its stream, and several streams stepped as one batch give the same
    tokens: the paths share the device's KV cache and sampler."""
    lone = {p: smollm2.generate(p, max_tokens=16, temperature=0) for p in PROMPTS}
    for prompt, completion in lone.items():
        assert len(completion.token_ids) == 16
        stream = smollm2.generate(prompt, max_tokens=16, temperature=0, stream=True)
        assert "".join(c.text for c in stream) == completion.text
    streams = [smollm2.generate(p, max_tokens=16, temperature=0, stream=True) for p in PROMPTS]
    while any(s.completion is None for s in streams):
        for chunk in smolgen.step_streams(streams):
            assert not isinstance(chunk, BaseException), chunk
    for prompt, stream in zip(PROMPTS, streams, strict=True):
        assert stream.completion.token_ids == lone[prompt].token_ids


def test_stop_strings_and_limits_on_the_device(smollm2):
    full = smollm2.generate("The theory of relativity", max_tokens=24, temperature=0)
    word = full.text.split()[3]
    cut = smollm2.generate("The theory of relativity", max_tokens=24, temperature=0, stop=[word])
    assert cut.finish_reason == "stop"
    assert word not in cut.text and full.text.startswith(cut.text)
    with pytest.raises(smolgen.ContextLengthExceededError):
        smollm2.generate([1] * (smollm2.context_length + 1), max_tokens=1)


def test_the_prefix_cache_serves_a_repeated_prompt(smollm2):
    smollm2.configure_prefix_cache(clear=True)
    prompt = "A system prompt shared by many requests, then a question. " * 8
    first = smollm2.generate(prompt, max_tokens=8, temperature=0, stream=True)
    first_ids = [c.token_id for c in first]
    second = smollm2.generate(prompt, max_tokens=8, temperature=0, stream=True)
    second_ids = [c.token_id for c in second]
    assert second.cached_tokens > 0
    assert second_ids == first_ids


def test_attention_maps_are_the_exact_passes(smollm2, dequantized):
    ids = smollm2.tokenize("Attention maps on the device")
    layers = [0, smollm2.info["layers"] - 1]
    maps = smollm2.attention(ids, layers=layers)
    assert maps.shape == (2, smollm2.info["heads"], len(ids), len(ids))
    assert np.all(np.triu(maps, k=1) == 0)  # causal: no query sees a later key
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-4)
    weights, cfg = dequantized
    truth: list[np.ndarray] = []
    forward(weights, cfg, ids, interleaved=True, attention=truth)
    atol = {"f32": 1e-4, "f16": 5e-3, "quantized": 0.1}[smollm2.info["gpu_weights"]]
    np.testing.assert_allclose(maps, np.stack([truth[i] for i in layers]), atol=atol)


def test_a_device_that_is_not_there_is_a_typed_error(smollm2_gguf):
    with pytest.raises(smolgen.UnsupportedModelError, match="not available"):
        smolgen.load(smollm2_gguf, device=f"{TEST_DEVICE.split(':')[0]}:64")
