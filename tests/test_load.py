"""Loading both formats: the same weights give the same logits, and both equal the NumPy
reference forward pass."""

from __future__ import annotations

import numpy as np
import pytest

import smolgen
import tiny_llama
from reference_llama import forward, kv_dtype_of, load_gguf_weights, log_softmax

IDS = [1, 40, 72, 75, 75, 78, 259, 34, 200, 5, 17, 263, 2, 101]


def test_tiny_safetensors_matches_numpy_reference(tiny_dir, tiny_weights):
    model = smolgen.load(tiny_dir)
    ours = model.logits(IDS, positions="all")
    ref = forward(
        tiny_weights, tiny_llama.CONFIG, IDS, interleaved=False, kv_dtype=kv_dtype_of(model)
    )
    assert ours.shape == (len(IDS), tiny_llama.CONFIG.vocab_size)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("dtype", "name", "rounded"),
    [
        ("bfloat16", "BF16", tiny_llama.bf16_values),
        ("float16", "F16", lambda v: v.astype(np.float16).astype(np.float32)),
    ],
)
def test_half_safetensors_run_in_place_and_match_the_reference(
    tmp_path, tiny_weights, dtype, name, rounded
):
    """Hugging Face's dtypes, read where the file maps them: the weights are exactly their
    16-bit values and the activations stay f32, so the logits equal the NumPy pass over the
    rounded weights to f32 accuracy."""
    directory = tiny_llama.write_hf_dir(tmp_path / dtype, tiny_weights, dtype=dtype)
    model = smolgen.load(directory)
    assert model.info["weight_types"]["attn_q"] == name
    rounded = {k: rounded(v) for k, v in tiny_weights.items()}
    ref = forward(rounded, tiny_llama.CONFIG, IDS, interleaved=False, kv_dtype=kv_dtype_of(model))
    np.testing.assert_allclose(model.logits(IDS, positions="all"), ref, atol=2e-4, rtol=1e-4)


def test_gguf_and_safetensors_of_the_same_weights_agree(tiny_dir, tiny_gguf):
    """GGUF stores Q/K rows permuted for interleaved RoPE; the result must not change."""
    from_st = smolgen.load(tiny_dir).logits(IDS, positions="all")
    from_gguf = smolgen.load(tiny_gguf).logits(IDS, positions="all")
    np.testing.assert_allclose(from_gguf, from_st, atol=2e-4, rtol=1e-4)


def test_last_position_logits_equal_the_last_row(tiny_gguf):
    model = smolgen.load(tiny_gguf)
    all_rows = model.logits(IDS, positions="all")
    last = model.logits(IDS)
    assert last.shape == (tiny_llama.CONFIG.vocab_size,)
    np.testing.assert_allclose(last, all_rows[-1], atol=1e-5)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16"])
def test_quantized_gguf_matches_reference_on_its_own_weights(tmp_path, tiny_weights, qtype):
    """Quantized matmuls also quantize the activations (to 8 bits), so allow that much."""
    path = tiny_llama.write_gguf(tmp_path / f"tiny-{qtype}.gguf", tiny_weights, qtype=qtype)
    weights, _ = load_gguf_weights(str(path))
    model = smolgen.load(path)
    ref = forward(weights, tiny_llama.CONFIG, IDS, interleaved=True, kv_dtype=kv_dtype_of(model))
    ours = model.logits(IDS, positions="all")
    relative = np.abs(ours - ref).max() / np.abs(ref).max()
    assert relative < {"F16": 1e-4, "BF16": 1e-4}.get(qtype, 0.03)
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize(("dtype", "tolerance"), [("f32", 1e-7), ("f16", 2e-3), ("bf16", 2e-2)])
def test_safetensors_dtype_conversion(tiny_dir, dtype, tolerance):
    """Weights are converted; activations stay f32, so the error is the weights' rounding."""
    base = smolgen.load(tiny_dir).logits(IDS, positions="all")
    converted = smolgen.load(tiny_dir, dtype=dtype)
    kinds = converted.info["weight_types"]
    assert kinds["attn_q"] == kinds["token_embd"] == dtype.upper()
    assert kinds["attn_norm"] == dtype.upper()
    logits = converted.logits(IDS, positions="all")
    assert np.abs(logits - base).max() / np.abs(base).max() < tolerance
    assert (logits.argmax(-1) == base.argmax(-1)).all()


def test_info_of_the_tiny_model(tiny_dir, tiny_gguf):
    cfg = tiny_llama.CONFIG
    for path, fmt in ((tiny_dir, "safetensors"), (tiny_gguf, "gguf")):
        info = smolgen.load(path).info
        assert info["format"] == fmt
        assert info["architecture"] == "llama"
        assert info["layers"] == cfg.num_layers
        assert info["heads"] == cfg.num_heads
        assert info["kv_heads"] == cfg.num_kv_heads
        assert info["vocab_size"] == cfg.vocab_size
        assert info["context_length"] == cfg.context_length
        assert info["tied_embeddings"] is True
        expected = sum(w.size for w in tiny_llama.random_weights().values())
        assert info["parameters"] == expected
        assert info["weight_bytes"] == expected * 4
        assert info["kv_cache_format"] == "f16"
        assert info["kv_bytes_per_token"] == 2 * cfg.num_layers * cfg.num_kv_heads * 16 * 2
        assert info["rope_layout"] == ("interleaved" if fmt == "gguf" else "half-split")


def test_real_model_info(smollm2):
    info = smollm2.info
    assert info["format"] == "gguf"
    assert (info["layers"], info["heads"], info["kv_heads"], info["head_dim"]) == (30, 9, 3, 64)
    assert (info["hidden_size"], info["intermediate_size"]) == (576, 1536)
    assert (info["vocab_size"], info["context_length"]) == (49152, 8192)
    assert info["tied_embeddings"] is True
    assert info["parameters"] == 134_515_008
    assert info["weight_types"]["attn_q"] == "Q4_1"
    assert info["weight_types"]["ffn_down"] == "Q4_1"
    assert info["weight_types"]["token_embd"] == "Q8_0"
    assert info["weight_types"]["attn_norm"] == "F32"
    assert 90e6 < info["weight_bytes"] < 100e6
    assert info["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 2  # f16
    assert info["device"] == "cpu"


def test_real_model_first_positions_match_numpy_reference(smollm2, smollm2_gguf):
    """The float64 reference runs on the dequantized weights; smolgen quantizes activations to
    8 bits in its quantized matmuls (as llama.cpp does), which on this 135M-parameter Q4_1 model
    moves log-probabilities by up to a few tenths: the likeliest token and most of the top 5
    agree."""
    weights, cfg = load_gguf_weights(str(smollm2_gguf))
    ids = smollm2.tokenize("The theory of relativity")
    ref = log_softmax(forward(weights, cfg, ids, interleaved=True))
    ours = log_softmax(smollm2.logits(ids, positions="all").astype(np.float64))
    for row_ref, row_ours in zip(ref, ours, strict=True):
        top_ref = np.argsort(-row_ref)[:5]
        assert row_ours.argmax() == row_ref.argmax()
        assert len(set(np.argsort(-row_ours)[:5]) & set(top_ref)) >= 4
        np.testing.assert_allclose(row_ours[top_ref], row_ref[top_ref], atol=0.4)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K", "Q3_K"])
def test_safetensors_quantized_at_load_equal_the_converted_gguf(tmp_path, qtype):
    """``quantize=`` gives what converting the same weights to a GGUF and quantizing them does
    (the 32-value types quantized by the ``gguf`` package, independently of smolgen): the same
    types and the same logits."""
    cfg = tiny_llama.K_CONFIG if qtype.endswith("_K") else tiny_llama.CONFIG
    weights = tiny_llama.random_weights(seed=5, cfg=cfg)
    directory = tiny_llama.write_hf_dir(tmp_path / "hf", weights, cfg)
    gguf_path = tiny_llama.write_gguf(tmp_path / f"tiny-{qtype}.gguf", weights, cfg, qtype=qtype)
    ours = smolgen.load(directory, quantize=qtype.lower())
    theirs = smolgen.load(gguf_path)
    kinds = ours.info["weight_types"]
    assert kinds == {k: v for k, v in theirs.info["weight_types"].items() if k in kinds}
    assert ours.info["engine"] == theirs.info["engine"] != "candle"
    ids = IDS[:8]
    np.testing.assert_allclose(
        ours.logits(ids, positions="all"), theirs.logits(ids, positions="all"), rtol=1e-5, atol=1e-5
    )


def test_quantize_at_load_refuses_what_it_cannot_do(tiny_dir, tiny_gguf):
    with pytest.raises(smolgen.InvalidArgumentError, match="dtype"):
        smolgen.load(tiny_dir, quantize="f16")
    with pytest.raises(smolgen.InvalidArgumentError, match="q4_0"):
        smolgen.load(tiny_dir, quantize="q9_x")
    with pytest.raises(smolgen.InvalidArgumentError, match="safetensors"):
        smolgen.load(tiny_gguf, quantize="q8_0")
