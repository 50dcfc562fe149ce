"""Model files that parse but lie (a tensor of the wrong type or at the wrong offset, NaN or
infinity in the weights, values that overflow in the forward pass, a tokenizer larger than the
model's vocabulary) are found at load where they can be, naming the file and the tensor, and
otherwise reported as the file's fault when the forward pass shows them, never blamed on the
caller's arguments. A model smolgen does not run names its file too."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import smolgen
import tiny_llama
from fuzz_gguf import ARRAY, STRING, U32, Kv, TensorEntry, parse, serialize

# ggml type ids
F32, F16, Q8_1, Q8_K, IQ2_XXS = 0, 1, 9, 15, 16


@pytest.fixture(scope="module")
def q8_gguf(tmp_path_factory, tiny_weights):
    path = tmp_path_factory.mktemp("q8") / "tiny-q8_0.gguf"
    return tiny_llama.write_gguf(path, tiny_weights, qtype="Q8_0")


@pytest.fixture(scope="module")
def k_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("k") / "tiny-k.gguf"
    weights = tiny_llama.random_weights(seed=3, cfg=tiny_llama.K_CONFIG)
    return tiny_llama.write_gguf(path, weights, tiny_llama.K_CONFIG, "F32")


def rewrite(source, path, change):
    """`source` with `change(parts)` applied, written to `path`."""
    g = parse(source.read_bytes())
    change(g)
    path.write_bytes(bytes(serialize(g)[0]))
    return path


def tensor(g, name):
    return next(t for t in g.tensors if t.name == name)


def set_bytes(g, name, at, raw):
    t = tensor(g, name)
    t.data = t.data[:at] + raw + t.data[at + len(raw) :]


def load_error(path, cls):
    with pytest.raises(cls) as err:
        smolgen.load(path)
    message = str(err.value)
    assert path.name in message, message
    assert err.value.path == str(path)
    return message


# ---------------------------------------------------------------------------------------------
# Types and shapes


@pytest.mark.parametrize(
    ("ttype", "name", "source"),
    [(Q8_1, "Q8_1", "tiny_gguf"), (Q8_K, "Q8_K", "k_gguf"), (IQ2_XXS, "IQ2_XXS", "k_gguf")],
)
def test_a_tensor_type_smolgen_does_not_run_is_unsupported_naming_file_tensor_and_type(
    request, tmp_path, ttype, name, source
):
    """ggml's activation types (Q8_1, Q8_K) as a stored weight, and the IQ types."""
    base = request.getfixturevalue(source)
    elements, size = {Q8_1: (32, 36), Q8_K: (256, 292), IQ2_XXS: (256, 66)}[ttype]

    def change(g):
        t = tensor(g, "blk.0.attn_q.weight")
        t.ttype = ttype
        t.data = bytes(t.dims[0] * t.dims[1] // elements * size)

    path = rewrite(base, tmp_path / f"{name}.gguf", change)
    message = load_error(path, smolgen.UnsupportedModelError)
    assert "blk.0.attn_q.weight" in message and name in message, message
    assert "Traceback" not in message and "backtrace" not in message


def test_a_norm_stored_in_a_type_smolgen_does_not_run_is_unsupported(tmp_path, tiny_gguf):
    def change(g):
        t = tensor(g, "blk.1.ffn_norm.weight")
        t.ttype, t.data = Q8_1, bytes(64 // 32 * 36)

    path = rewrite(tiny_gguf, tmp_path / "norm-q8_1.gguf", change)
    assert "blk.1.ffn_norm.weight" in load_error(path, smolgen.UnsupportedModelError)


def test_a_corrupt_type_that_still_fits_the_file_is_caught(tmp_path, tiny_gguf):
    """F32 data read as F16 (half the bytes, still inside the file): the values it gives are
    garbage, often NaN, and the load says which tensor."""

    def change(g):
        t = tensor(g, "blk.0.ffn_gate.weight")
        t.ttype = F16
        t.data = np.full(len(t.data) // 4, np.nan, np.float16).tobytes()

    path = rewrite(tiny_gguf, tmp_path / "type.gguf", change)
    assert "blk.0.ffn_gate.weight" in load_error(path, smolgen.MalformedModelError)


def test_a_tensor_offset_pointing_at_other_bytes_is_caught(tmp_path, tiny_gguf):
    """A matrix whose offset was corrupted to point at bytes that are not its own (here a
    tensor the model does not use, holding NaN)."""

    def change(g):
        down = tensor(g, "blk.1.ffn_down.weight")
        nan = np.full(len(down.data) // 4, np.nan, np.float32).tobytes()
        g.tensors.append(TensorEntry("unused.weight", list(down.dims), F32, nan))
        at = 0
        for t in g.tensors:
            at = -(-at // 32) * 32
            offset = at
            at += len(t.data)
        down.offset = offset  # the last tensor's: the unused one

    path = rewrite(tiny_gguf, tmp_path / "offset.gguf", change)
    assert "blk.1.ffn_down.weight" in load_error(path, smolgen.MalformedModelError)


# ---------------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize(
    ("name", "at", "raw"),
    [
        ("blk.0.attn_k.weight", 0, struct.pack("<f", np.nan)),
        ("token_embd.weight", 265 * 64 * 4 - 4, struct.pack("<f", np.inf)),
        ("blk.1.ffn_down.weight", 4 * 64 * 4, struct.pack("<f", -np.inf)),
    ],
)
def test_non_finite_values_in_a_matrix_are_found_at_load(tmp_path, tiny_gguf, name, at, raw):
    path = rewrite(tiny_gguf, tmp_path / "nan.gguf", lambda g: set_bytes(g, name, at, raw))
    message = load_error(path, smolgen.MalformedModelError)
    assert name in message, message


def test_a_nan_scale_in_a_quantized_block_is_found_at_load(tmp_path, q8_gguf):
    half_nan = np.array([np.nan], np.float16).tobytes()
    path = rewrite(
        q8_gguf,
        tmp_path / "scale.gguf",
        lambda g: set_bytes(g, "blk.0.attn_output.weight", 0, half_nan),
    )
    assert "blk.0.attn_output.weight" in load_error(path, smolgen.MalformedModelError)


@pytest.mark.parametrize("index", [0, 13, 63])
def test_a_norm_is_checked_entirely(tmp_path, tiny_gguf, index):
    raw = struct.pack("<f", np.nan)
    path = rewrite(
        tiny_gguf,
        tmp_path / f"norm-{index}.gguf",
        lambda g: set_bytes(g, "blk.0.attn_norm.weight", index * 4, raw),
    )
    message = load_error(path, smolgen.MalformedModelError)
    assert "blk.0.attn_norm.weight" in message and f"element {index}" in message, message


def test_weights_that_overflow_in_the_forward_pass_are_the_files_fault(tmp_path, tiny_gguf):
    """Every value finite, so the load passes, but so large that the products overflow: the
    logits are NaN. That is a broken model file, not a bad argument."""

    def change(g):
        t = tensor(g, "blk.0.ffn_down.weight")
        t.data = np.full(len(t.data) // 4, 3e38, np.float32).tobytes()

    path = rewrite(tiny_gguf, tmp_path / "overflow.gguf", change)
    model = smolgen.load(path)
    for attempt in (
        lambda: model.generate("hello", max_tokens=2, temperature=0),
        lambda: model.generate("hello", max_tokens=2, temperature=0.8, seed=1),
        lambda: list(model.generate("hello", max_tokens=2, stream=True)),
        lambda: model.logits([1, 40, 72]),
    ):
        with pytest.raises(smolgen.MalformedModelError) as err:
            attempt()
        assert not isinstance(err.value, smolgen.InvalidArgumentError)
        assert path.name in str(err.value) and "non-finite" in str(err.value)
        assert err.value.path == str(path)


def test_a_corrupt_embedding_row_fails_only_the_requests_that_read_it(tmp_path, tiny_weights):
    """NaN in one row of the embedding (not tied to the output), outside the rows the load
    samples: the load passes, a prompt with that token fails as the file's fault, and a
    batch-mate stepped in the same pass goes on exactly as alone."""
    weights = dict(tiny_weights)
    weights["output.weight"] = np.random.default_rng(5).standard_normal((265, 64), np.float32)
    untied = tiny_llama.write_gguf(tmp_path / "untied.gguf", weights)
    row = 3 + ord("A")  # the byte-level token of "A" (after the three special tokens)
    nan = np.full(64, np.nan, np.float32).tobytes()
    path = rewrite(
        untied,
        tmp_path / "row.gguf",
        lambda g: set_bytes(g, "token_embd.weight", row * 64 * 4, nan),
    )
    model = smolgen.load(path)  # row 68 lies between the sampled spans
    alone = model.generate("hi", max_tokens=4, temperature=0)
    with pytest.raises(smolgen.MalformedModelError, match="non-finite"):
        model.generate("A", max_tokens=4, temperature=0)

    from smolgen import _core

    bad = model.generate("A", max_tokens=4, temperature=0, stream=True)
    good = model.generate("hi", max_tokens=4, temperature=0, stream=True)
    first = _core.step_streams([bad, good])
    assert isinstance(first[0], smolgen.MalformedModelError), first
    tokens = [first[1].token_id]
    while (step := _core.step_streams([good])[0]) is not None:
        tokens.append(step.token_id)
    assert tokens == alone.token_ids


def test_the_sampler_still_rejects_nan_logits_its_caller_passes():
    """Logits handed to the sampler directly are the caller's: still an argument error."""
    from smolgen import _core

    with pytest.raises(smolgen.InvalidArgumentError, match="NaN"):
        _core.sampler_distribution(np.array([0.0, np.nan, 1.0, 2.0], np.float32))


# ---------------------------------------------------------------------------------------------
# The vocabulary


def test_a_tokenizer_larger_than_the_vocabulary_is_malformed(tmp_path, tiny_gguf):
    """Ids the tokenizer makes must have embeddings; otherwise every prompt that uses them
    would fail as if the caller had passed a bad token id."""

    def change(g):
        tokens = next(kv for kv in g.kvs if kv.key == "tokenizer.ggml.tokens")
        types = next(kv for kv in g.kvs if kv.key == "tokenizer.ggml.token_type")
        extra = [f"<extra_{i}>" for i in range(5)]
        tokens.value = (STRING, tokens.value[1] + extra)
        types.value = (types.value[0], types.value[1] + [1] * len(extra))
        g.kvs.append(Kv("llama.vocab_size", U32, tiny_llama.CONFIG.vocab_size))

    path = rewrite(tiny_gguf, tmp_path / "vocab.gguf", change)
    assert "270 token ids" in load_error(path, smolgen.MalformedModelError)


# ---------------------------------------------------------------------------------------------
# Every load error names the file


def set_kv(key, vtype, value):
    def change(g):
        g.kvs = [kv for kv in g.kvs if kv.key != key]
        g.kvs.append(Kv(key, vtype, value))

    return change


@pytest.mark.parametrize(
    ("label", "change", "words"),
    [
        ("tokenizer", set_kv("tokenizer.ggml.model", STRING, "llama"), "tokenizer model"),
        ("pre", set_kv("tokenizer.ggml.pre", STRING, "qwen2"), "pre-tokenizer"),
        ("rope", set_kv("llama.rope.dimension_count", U32, 8), "partial rotary"),
        ("arch", set_kv("general.architecture", STRING, "mamba"), "mamba"),
        ("arch-type", set_kv("llama.rope.dimension_count", ARRAY, (U32, [16])), "rotary"),
    ],
)
def test_every_unsupported_gguf_names_the_file(tmp_path, tiny_gguf, label, change, words):
    path = rewrite(tiny_gguf, tmp_path / f"{label}.gguf", change)
    message = load_error(path, smolgen.UnsupportedModelError)
    assert words in message, message


def test_an_unsupported_hf_directory_names_the_file(tmp_path, tiny_dir):
    bad = tmp_path / "scaled"
    bad.mkdir()
    for f in tiny_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    config = json.loads((bad / "config.json").read_text())
    config["rope_scaling"] = {"type": "linear", "factor": 2.0}
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(smolgen.UnsupportedModelError) as err:
        smolgen.load(bad)
    assert "config.json" in str(err.value) and err.value.path.endswith("config.json")


def test_an_unsupported_device_names_no_file(tiny_gguf):
    with pytest.raises(smolgen.UnsupportedModelError) as err:
        smolgen.load(tiny_gguf, device="cuda")  # not built with the cuda feature here
    assert err.value.path is None
