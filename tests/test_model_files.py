"""Errors about a model name its file: what smolgen does not run as much as what is corrupt."""

from __future__ import annotations

import json

import pytest

import smolgen
from fuzz_gguf import ARRAY, STRING, U32, Kv, parse, serialize


def rewrite(source, path, change):
    """`source` with `change(parts)` applied, written to `path`."""
    g = parse(source.read_bytes())
    change(g)
    path.write_bytes(bytes(serialize(g)[0]))
    return path


def load_error(path, cls):
    with pytest.raises(cls) as err:
        smolgen.load(path)
    message = str(err.value)
    assert path.name in message, message
    assert err.value.path == str(path)
    return message


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
