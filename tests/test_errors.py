"""Broken model files give typed errors naming the file and the problem: never a crash, a hang
or a huge allocation."""

from __future__ import annotations

import json
import struct

import pytest

import smolgen
import tiny_llama


def load_error(path, cls=smolgen.MalformedModelError):
    with pytest.raises(cls) as err:
        smolgen.load(path)
    assert str(path) in str(err.value) or str(path.name) in str(err.value)
    return str(err.value)


def test_missing_path_alias_or_repo(tmp_path):
    with pytest.raises(smolgen.ModelNotFoundError) as err:
        smolgen.load(tmp_path / "nope.gguf")
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(smolgen.ModelNotFoundError):
        smolgen.load("no-such-alias")


def test_wrong_magic(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGML" + bytes(60))
    assert "not a GGUF file" in load_error(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    assert "too short" in load_error(path)


def test_every_truncation_of_a_gguf_is_an_error(tmp_path, tiny_gguf):
    data = tiny_gguf.read_bytes()
    cuts = sorted({4, 8, 16, 24, 100, 1000, 5000, len(data) // 2, len(data) - 1})
    for cut in cuts:
        path = tmp_path / f"cut-{cut}.gguf"
        path.write_bytes(data[:cut])
        load_error(path)


def test_absurd_tensor_count(tmp_path, tiny_gguf):
    data = bytearray(tiny_gguf.read_bytes())
    data[8:16] = struct.pack("<Q", 2**62)
    path = tmp_path / "huge-count.gguf"
    path.write_bytes(bytes(data))
    assert "tensor count" in load_error(path)


def test_absurd_string_length(tmp_path, tiny_gguf):
    data = bytearray(tiny_gguf.read_bytes())
    data[24:32] = struct.pack("<Q", 2**60)  # the first metadata key's length
    path = tmp_path / "huge-string.gguf"
    path.write_bytes(bytes(data))
    assert "more than the" in load_error(path)


def test_unsupported_architecture(tmp_path, tiny_weights):
    path = tiny_llama.write_gguf(tmp_path / "m.gguf", tiny_weights, architecture="mamba")
    with pytest.raises(smolgen.UnsupportedModelError, match="mamba"):
        smolgen.load(path)


def test_missing_metadata_key(tmp_path, tiny_gguf):
    data = tiny_gguf.read_bytes().replace(b"llama.block_count", b"llama.block_c0unt")
    path = tmp_path / "missing-key.gguf"
    path.write_bytes(data)
    assert "llama.block_count" in load_error(path)


def test_corrupt_safetensors(tmp_path, tiny_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    shard = sorted(bad.glob("*.safetensors"))[0]
    shard.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(smolgen.MalformedModelError, match=shard.name):
        smolgen.load(bad)


def test_incomplete_hf_directory(tmp_path, tiny_dir):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (no_weights / name).write_bytes((tiny_dir / name).read_bytes())
    with pytest.raises(smolgen.ModelNotFoundError, match="safetensors"):
        smolgen.load(no_weights)
    config = json.loads((tiny_dir / "config.json").read_text())
    config["model_type"], config["architectures"] = "gpt2", ["GPT2LMHeadModel"]
    (no_weights / "config.json").write_text(json.dumps(config))
    with pytest.raises(smolgen.UnsupportedModelError):
        smolgen.load(no_weights)
    (no_weights / "config.json").write_text("{not json")
    with pytest.raises(smolgen.MalformedModelError, match=r"config\.json"):
        smolgen.load(no_weights)


def test_wrong_tensor_shape(tmp_path, tiny_weights):
    import numpy as np

    weights = dict(tiny_weights)
    weights["blk.1.ffn_up.weight"] = np.zeros((64, 64), dtype=np.float32)
    path = tiny_llama.write_gguf(tmp_path / "shape.gguf", weights)
    assert "blk.1.ffn_up.weight" in load_error(path)


def test_bad_device_and_dtype(tiny_gguf, tiny_dir):
    with pytest.raises(smolgen.InvalidArgumentError):
        smolgen.load(tiny_gguf, device="tpu")
    with pytest.raises(smolgen.UnsupportedModelError):
        smolgen.load(tiny_gguf, device="cuda")  # not built with the cuda feature here
    with pytest.raises(smolgen.InvalidArgumentError):
        smolgen.load(tiny_dir, dtype="f8")
    with pytest.raises(smolgen.InvalidArgumentError):
        smolgen.load(tiny_gguf, dtype="f16")
