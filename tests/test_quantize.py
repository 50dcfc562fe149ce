"""``smolgen.quantize`` / ``smolgen quantize``: writing a model as a GGUF of another type.

The written file is held to a GGUF of the same weights written by llama.cpp's own Python package
(``gguf``: its writer, and its quantizers for the 32-value types), tensor for tensor, and to the
metadata llama.cpp's converter writes; then it must load and run in smolgen like its source.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import smolgen
import tiny_llama

IDS = [1, 40, 72, 75, 75, 78, 259, 34, 200, 5, 17, 263, 2, 101]


@pytest.fixture(scope="module")
def k_weights():
    """Rows of 256 values, so the K-quants apply without falling back."""
    return tiny_llama.random_weights(seed=3, cfg=tiny_llama.K_CONFIG)


@pytest.fixture(scope="module")
def k_dir(tmp_path_factory, k_weights):
    return tiny_llama.write_hf_dir(
        tmp_path_factory.mktemp("k-hf"), k_weights, cfg=tiny_llama.K_CONFIG, dtype="bfloat16"
    )


def read(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return reader, tensors, fields


def bf16_rounded(w):
    return {k: tiny_llama.bf16_values(v) for k, v in w.items()}


# What llama-quantize writes for K_CONFIG (2 layers, tied embeddings) as Q4_K_M: the embedding
# doubles as the output matrix (Q6_K), and the value and down projections of the last layer
# ("use_more_bits": the last eighth) get Q6_K.
Q4_K_M_TYPES = {
    "token_embd": "Q6_K",
    "blk.0.attn_v": "Q4_K",
    "blk.1.attn_v": "Q6_K",
    "blk.0.ffn_down": "Q4_K",
    "blk.1.ffn_down": "Q6_K",
}


@pytest.mark.parametrize(
    ("file_type", "qtype", "qtypes"),
    [
        ("Q8_0", "Q8_0", {}),
        ("Q4_0", "Q4_0", {"token_embd": "Q6_K"}),
        ("Q4_K_M", "Q4_K", Q4_K_M_TYPES),
    ],
)
def test_hf_directory_becomes_the_gguf_llama_cpp_writes(
    tmp_path, k_dir, k_weights, file_type, qtype, qtypes
):
    """bf16 safetensors -> GGUF: the same tensors, types and bytes as a GGUF of the same
    (bf16-rounded) weights written by the ``gguf`` package with llama.cpp's Q/K permutation."""
    out = tmp_path / f"tiny.{file_type}.gguf"
    result = smolgen.quantize(k_dir, out, file_type.lower())
    assert result.path == out and out.stat().st_size == result.output_bytes
    assert result.file_type == file_type
    expected = tiny_llama.write_gguf(
        tmp_path / "expected.gguf",
        bf16_rounded(k_weights),
        tiny_llama.K_CONFIG,
        qtype=qtype,
        qtypes=qtypes,
    )
    _, ours, fields = read(out)
    _, theirs, their_fields = read(expected)
    assert set(ours) == set(theirs)
    for name, t in theirs.items():
        assert ours[name].tensor_type == t.tensor_type, name
        assert list(ours[name].shape) == list(t.shape), name
        assert np.asarray(ours[name].data).tobytes() == np.asarray(t.data).tobytes(), name
    for key in (
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token",
        "llama.block_count",
        "llama.embedding_length",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
    ):
        assert fields[key] == their_fields[key], key
    assert fields["general.file_type"] == {"Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15}[file_type]
    assert fields["general.quantization_version"] == 2


def test_the_written_file_runs_as_its_source_does(tmp_path, tiny_dir, tiny_weights):
    """F32 out of f32 safetensors: the same weights, so the same logits (up to the order of
    the rotary pairs, which moves a few float roundings)."""
    out = tmp_path / "tiny.f32.gguf"
    smolgen.quantize(tiny_dir, out, "F32")
    ours = smolgen.load(out).logits(IDS, positions="all")
    source = smolgen.load(tiny_dir).logits(IDS, positions="all")
    np.testing.assert_allclose(ours, source, atol=2e-4, rtol=1e-4)
    tokenizer, source_tokenizer = smolgen.Tokenizer.load(out), smolgen.Tokenizer.load(tiny_dir)
    text = "<|im_start|>hello world 2024<|im_end|>"
    assert tokenizer.encode(text, special=True) == source_tokenizer.encode(text, special=True)


def test_gguf_to_gguf_and_the_requantize_guard(tmp_path, tiny_gguf, tiny_weights):
    out = tmp_path / "tiny.q8_0.gguf"
    result = smolgen.quantize(tiny_gguf, out, "q8_0")
    assert result.type_counts() == {"q8_0": 15, "f32": 5}
    expected = tiny_llama.write_gguf(tmp_path / "expected.gguf", tiny_weights, qtype="Q8_0")
    _, ours, _ = read(out)
    _, theirs, _ = read(expected)
    for name, t in theirs.items():
        assert np.asarray(ours[name].data).tobytes() == np.asarray(t.data).tobytes(), name

    again = tmp_path / "tiny.q4_0.gguf"
    with pytest.raises(smolgen.InvalidArgumentError, match="already quantized"):
        smolgen.quantize(out, again, "q4_0")
    assert not again.exists()
    smolgen.quantize(out, again, "q4_0", allow_requantize=True)
    assert smolgen.load(again).info["weight_types"]["attn_q"] == "Q4_0"
    # The same type: tensors are copied, not rounded again.
    same = tmp_path / "same.gguf"
    smolgen.quantize(out, same, "q8_0")
    _, copied, _ = read(same)
    for name, t in ours.items():
        assert np.asarray(copied[name].data).tobytes() == np.asarray(t.data).tobytes(), name


def test_bad_requests_fail_cleanly_and_leave_nothing(tmp_path, tiny_gguf):
    with pytest.raises(smolgen.InvalidArgumentError, match="Q4_K_M"):
        smolgen.quantize(tiny_gguf, tmp_path / "x.gguf", "q4_k_x")
    with pytest.raises(smolgen.InvalidArgumentError, match="is the input"):
        smolgen.quantize(tiny_gguf, tiny_gguf, "f32")
    with pytest.raises(smolgen.InvalidArgumentError, match="directory"):
        smolgen.quantize(tiny_gguf, tmp_path, "f32")
    with pytest.raises(smolgen.ModelIOError):
        smolgen.quantize(tiny_gguf, tmp_path / "missing" / "x.gguf", "f32")
    with pytest.raises(smolgen.ModelNotFoundError):
        smolgen.quantize(tmp_path / "nothing.gguf", tmp_path / "x.gguf", "f32")

    def stop(i, n, name, stored, written):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        smolgen.quantize(tiny_gguf, tmp_path / "x.gguf", "q8_0", progress=stop)
    assert list(tmp_path.iterdir()) == [], "a stopped job leaves no file behind"


def test_the_command(tmp_path, tiny_dir):
    out = tmp_path / "tiny.gguf"
    r = subprocess.run(
        [sys.executable, "-m", "smolgen", "quantize", str(tiny_dir), str(out), "--type", "q8_0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "blk.1.ffn_down.weight" in r.stderr and "q8_0" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "smolgen", "quantize", str(out), str(tmp_path / "b.gguf"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2 and "already quantized" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "smolgen",
            "quantize",
            str(tiny_dir),
            str(tmp_path / "c.gguf"),
            "--type",
            "bf16",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["file_type"] == "BF16" and summary["types"] == {"bf16": 15, "f32": 5}
