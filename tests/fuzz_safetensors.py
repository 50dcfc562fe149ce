"""A structure-aware fuzzer for Hugging Face model directories, the sibling of ``fuzz_gguf.py``.

Valid tiny directories (``tiny_llama.write_hf_dir``: bf16, f16 and f32 safetensors, tied and
untied embeddings, one sharded with ``model.safetensors.index.json``) are parsed into their parts
(each safetensors file's header entries and tensor data, ``config.json``, ``tokenizer.json``,
``tokenizer_config.json``, the index), mutated where a broken writer, a bad download or a hostile
directory would differ, and written back:

- safetensors: the header-length prefix (huge, zero, too small, past the end), a header that is
  not JSON, not an object or cut short, tensor dtypes (F64, I8, BOOL, F8_E4M3, garbage, the wrong
  JSON type), shapes (near values, zero, huge, negative, extra or missing dimensions,
  non-integers), data offsets (reversed, overlapping, past the end, non-integers, the wrong
  length), dropped, duplicated and renamed tensors, ``__metadata__`` oddities, truncation, bit
  flips and NaN or infinite values in the data;
- ``config.json``: dropped keys, values of the wrong type or out of range, sizes that disagree
  with each other or with the tensors, RoPE and RMSNorm constants that are NaN, zero or negative,
  unknown architectures, text that is not JSON;
- the tokenizer files: missing, cut short or not JSON, vocabularies larger or smaller than the
  embeddings, token ids out of range, BOS and EOS missing or unknown, a chat template of the
  wrong type;
- the index of the sharded directory: a shard that is missing, a tensor in two shards, a path
  out of the directory (smolgen reads every ``*.safetensors`` in the directory, not the index).

Each case loads with ``smolgen.load(dir, threads=2)`` in a worker subprocess and, when it loads,
runs one short ``generate``; ``fuzz_driver.judge`` judges the outcome as it does a GGUF file's
(a load error must name the directory or a file in it).

Long runs (failing directories are saved under ``tests/regressions/safetensors/``)::

    python tests/fuzz_safetensors.py --seconds 1800 --seed 1

``tests/test_fuzz_safetensors.py`` runs a fixed number of cases and replays every saved one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import shutil
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import fuzz_driver
import fuzz_gguf
from fuzz_driver import Failure, Format
from fuzz_gguf import INTERESTING_FLOATS, INTERESTING_U64, _near, flip_bits

REGRESSIONS = fuzz_gguf.REGRESSIONS / "safetensors"

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
INDEX = "model.safetensors.index.json"
JSON_FILES = (CONFIG, TOKENIZER, TOKENIZER_CONFIG, INDEX)

# Bytes per element of the dtypes a safetensors header may name (the loader runs the first three).
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "U16": 2}
DTYPE_SIZES |= {"I32": 4, "U32": 4, "I64": 8, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_DTYPES = ("F32", "F16", "BF16")
ODD_DTYPES = [*DTYPE_SIZES, "F4", "F6_E2M3", "E8M0", "C64", "bf16", "F32 ", "", "FLOAT", "F128"]


# ---------------------------------------------------------------------------------------------
# The directory as parts, and back to files.


@dataclass
class Tensor:
    name: str
    # What the header says: normally a dtype name and a list of dimensions (outermost first).
    dtype: object
    shape: object
    data: bytes
    # The header's `data_offsets`; None lays the data out after the previous tensor's.
    offsets: object = None
    # Header fields replaced (a value) or dropped (`DROP`) on the way out.
    fields: dict = field(default_factory=dict)
    # The whole header entry replaced (by something not an object).
    entry: object = None


class _Marker:
    """A value that is not JSON and that copies to itself (so `is` still finds it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __deepcopy__(self, memo: dict) -> _Marker:
        return self


DROP = _Marker("DROP")  # a header field left out
ABSENT = _Marker("ABSENT")  # no `__metadata__`


@dataclass
class Shard:
    tensors: list[Tensor]
    metadata: object = ABSENT  # the header's `__metadata__`


@dataclass
class ModelDir:
    # config.json, tokenizer.json, ...: the parsed JSON value, written back with json.dumps.
    json: dict[str, object]
    # File name -> its tensors.
    shards: dict[str, Shard]


@dataclass
class Layout:
    """Where the parts of a serialized safetensors file lie."""

    header_end: int = 0  # 8 + the header's length: where the data starts


def header_text(shard: Shard) -> str:
    """The JSON header of `shard`, written entry by entry (so a name may appear twice)."""
    entries, at = [], 0
    if shard.metadata is not ABSENT:
        entries.append(f'"__metadata__": {json.dumps(shard.metadata)}')
    for t in shard.tensors:
        offsets = [at, at + len(t.data)] if t.offsets is None else t.offsets
        at += len(t.data)
        entry = {"dtype": t.dtype, "shape": t.shape, "data_offsets": offsets}
        for k, v in t.fields.items():
            if v is DROP:
                entry.pop(k, None)
            else:
                entry[k] = v
        value = entry if t.entry is None else t.entry
        entries.append(f"{json.dumps(t.name)}: {json.dumps(value)}")
    return "{" + ", ".join(entries) + "}"


def serialize_shard(shard: Shard) -> tuple[bytearray, Layout]:
    text = header_text(shard).encode("utf-8", "surrogatepass")
    text += b" " * (-len(text) % 8)
    out = bytearray(struct.pack("<Q", len(text)) + text)
    lay = Layout(header_end=len(out))
    for t in shard.tensors:
        out.extend(t.data)
    return out, lay


def serialize(d: ModelDir) -> tuple[dict[str, bytearray], dict[str, Layout]]:
    files: dict[str, bytearray] = {}
    layouts: dict[str, Layout] = {}
    for name, value in d.json.items():
        files[name] = bytearray(json.dumps(value, indent=1).encode("utf-8", "surrogatepass"))
    for name, shard in d.shards.items():
        files[name], layouts[name] = serialize_shard(shard)
    return files, layouts


def parse_shard(buf: bytes) -> Shard:
    """The parts of a valid safetensors file (the writer's output: no checks here)."""
    (n,) = struct.unpack_from("<Q", buf)
    header = json.loads(buf[8 : 8 + n])
    metadata = header.pop("__metadata__", ABSENT)
    tensors = []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        start, end = info["data_offsets"]
        data = bytes(buf[8 + n + start : 8 + n + end])
        tensors.append(Tensor(name, info["dtype"], list(info["shape"]), data))
    return Shard(tensors, metadata)


def parse(directory: Path) -> ModelDir:
    d = ModelDir({}, {})
    for path in sorted(directory.iterdir()):
        if path.name in JSON_FILES:
            d.json[path.name] = json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            d.shards[path.name] = parse_shard(path.read_bytes())
    return d


def write_dir(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def read_dir(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Valid directories to start from.


def _as_dtype(values, dtype: str) -> bytes:
    import numpy as np

    import tiny_llama

    if dtype == "bfloat16":
        return tiny_llama.bf16_rounded(values).tobytes()
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def base_dirs(directory: Path) -> list[tuple[str, ModelDir]]:
    """Tiny valid model directories (bf16, f16, f32; tied and untied; one sharded), written once
    per directory."""
    import numpy as np

    import tiny_llama
    from reference_llama import LlamaConfig

    small = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        vocab_size=tiny_llama.CONFIG.vocab_size,
        context_length=32,
    )
    plans = [
        ("bf16", small, "bfloat16", False, 1),
        ("f16-untied", small, "float16", True, 1),
        ("f32", small, "float32", False, 1),
        ("bf16-untied", tiny_llama.CONFIG, "bfloat16", True, 1),
        ("f16-sharded", tiny_llama.CONFIG, "float16", True, 2),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for seed, (label, cfg, dtype, untied, shards) in enumerate(plans):
        path = directory / label
        if not path.exists():
            tmp = directory / f"{label}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tiny_llama.write_hf_dir(
                tmp, tiny_llama.random_weights(seed=seed, cfg=cfg), cfg, shards, dtype
            )
            d = parse(tmp)
            if untied:
                rng = np.random.default_rng(seed + 100)
                lm_head = rng.standard_normal((cfg.vocab_size, cfg.hidden_size)) / 8
                last = d.shards[sorted(d.shards)[-1]]
                data = _as_dtype(lm_head.astype(np.float32), dtype)
                dtype_name = last.tensors[0].dtype
                last.tensors.append(Tensor("lm_head.weight", dtype_name, list(lm_head.shape), data))
                config = d.json[CONFIG]
                assert isinstance(config, dict)
                config["tie_word_embeddings"] = False
            if shards > 1:
                weight_map = {t.name: f for f, s in d.shards.items() for t in s.tensors}
                total = sum(len(t.data) for s in d.shards.values() for t in s.tensors)
                d.json[INDEX] = {"metadata": {"total_size": total}, "weight_map": weight_map}
            shutil.rmtree(tmp)
            files, _ = serialize(d)
            write_dir(tmp, files)
            tmp.replace(path)
        out.append((label, parse(path)))
    return out


# ---------------------------------------------------------------------------------------------
# Mutations of the parts. Each takes a random source and the directory, changes it in place and
# returns a short name for what it did.


def _tensor(rng: random.Random, d: ModelDir) -> tuple[Shard, Tensor] | None:
    pairs = [(s, t) for s in d.shards.values() for t in s.tensors]
    if not pairs:
        return None
    # Norms are read whole, matrices sampled: pick a norm a third of the time.
    norms = [(s, t) for s, t in pairs if "norm" in t.name]
    return rng.choice(norms) if norms and rng.random() < 0.33 else rng.choice(pairs)


def _elements(shape: object) -> int | None:
    if not isinstance(shape, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape
    ):
        return None
    return math.prod(shape)


def _resize(rng: random.Random, t: Tensor) -> None:
    """Data of the size the (changed) shape and dtype call for: random bytes, zeros or the old
    bytes repeated."""
    n, size = _elements(t.shape), DTYPE_SIZES.get(t.dtype if isinstance(t.dtype, str) else "")
    if n is None or size is None or n * size > 1 << 22:
        return
    want = n * size
    how = rng.randrange(3)
    if how == 0:
        t.data = rng.randbytes(want)
    elif how == 1:
        t.data = bytes(want)
    else:
        t.data = (t.data * (want // max(len(t.data), 1) + 1))[:want]


def _odd_value(rng: random.Random, v: object) -> object:
    """`v` as the wrong JSON type or out of its range."""
    return rng.choice(
        [
            str(v),
            None,
            True,
            False,
            [v],
            {"value": v},
            -1,
            0,
            2**40,
            2**64,
            -(2**63),
            float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 1.5,
            (v + 0.5) if isinstance(v, int | float) else 0.5,
        ]
    )


def m_dtype(rng: random.Random, d: ModelDir) -> str:
    picked = _tensor(rng, d)
    if picked is None:
        return "dtype"
    _, t = picked
    how = rng.randrange(4)
    if how == 0:
        t.dtype = rng.choice(FLOAT_DTYPES)  # another float type the loader runs
    elif how == 1:
        t.dtype = rng.choice(ODD_DTYPES)
    elif how == 2:
        t.dtype = rng.choice([None, 32, 1.5, True, ["F32"], {"dtype": "F32"}])
    else:
        t.dtype = rng.choice(["F64", "I8", "BOOL", "F8_E4M3", "I32", "U8"])
    if rng.random() < 0.7:
        _resize(rng, t)
    return "dtype"


def m_shape(rng: random.Random, d: ModelDir) -> str:
    picked = _tensor(rng, d)
    if picked is None:
        return "shape"
    _, t = picked
    shape = list(t.shape) if isinstance(t.shape, list) else [1]
    j = rng.randrange(len(shape)) if shape else 0
    how = rng.randrange(9)
    if how == 0 and len(shape) > 1:
        shape.reverse()
    elif how == 1 and shape:
        shape[j] = _near(rng, shape[j])
    elif how == 2:
        shape.insert(rng.randrange(len(shape) + 1), rng.choice([1, 2]))
    elif how == 3 and shape:
        shape.pop(j)
    elif how == 4 and shape:
        shape[j] = rng.choice([0, 1, 2**32, 2**40, 2**63, 2**64, 2**64 + 32])
    elif how == 5 and shape:
        shape[j] = rng.choice([-1, -shape[j], -(2**63)])
    elif how == 6 and shape:
        shape[j] = rng.choice([str(shape[j]), float(shape[j]), shape[j] + 0.5, None, True])
    elif how == 7:
        t.shape = rng.choice([math.prod(shape), "x", None, {}, [[2, 3]]])
        return "shape"
    else:
        shape = [math.prod(shape)] if rng.random() < 0.5 else [*shape[:-1], 0] if shape else []
    t.shape = shape
    if rng.random() < 0.6:
        _resize(rng, t)
    return "shape"


def m_offsets(rng: random.Random, d: ModelDir) -> str:
    picked = _tensor(rng, d)
    if picked is None:
        return "offsets"
    shard, t = picked
    at = 0
    for u in shard.tensors:
        if u is t:
            break
        at += len(u.data)
    s, e = at, at + len(t.data)
    total = sum(len(u.data) for u in shard.tensors)
    t.offsets = rng.choice(
        [
            [e, s],  # reversed
            [max(s - 2, 0), e - 2],  # overlapping the one before
            [s, e + 2],  # overlapping the one after
            [s, total + 64],  # past the end
            [total, total + len(t.data)],
            [0, len(t.data)],
            [s + 1, e + 1],
            [s, 2**64 - 1],
            [2**64 - 1, 2**64 + 7],
            [-1, e],
            [str(s), str(e)],
            [float(s), float(e) + 0.5],
            [s],
            [s, e, e],
            [],
            None,
            s,
            {"start": s},
        ]
    )
    return "offsets"


def m_drop(rng: random.Random, d: ModelDir) -> str:
    picked = _tensor(rng, d)
    if picked is not None:
        shard, t = picked
        shard.tensors.remove(t)
    return "drop"


def m_dup(rng: random.Random, d: ModelDir) -> str:
    """A tensor twice: in the same header (the JSON has the name twice) or in another shard."""
    picked = _tensor(rng, d)
    if picked is not None:
        _, t = picked
        shard = rng.choice(list(d.shards.values()))
        twin = copy.copy(t)
        if rng.random() < 0.5:
            twin.data = rng.randbytes(len(t.data))
        shard.tensors.insert(rng.randrange(len(shard.tensors) + 1), twin)
    return "dup"


def m_rename(rng: random.Random, d: ModelDir) -> str:
    picked = _tensor(rng, d)
    if picked is not None:
        _, t = picked
        others = [u.name for s in d.shards.values() for u in s.tensors]
        t.name = rng.choice(
            [
                rng.choice(others),
                "model.layers.9.self_attn.q_proj.weight",
                "model.layers.18446744073709551616.mlp.up_proj.weight",
                "model.layers.-1.mlp.up_proj.weight",
                "lm_head.weight",
                "model.embed_tokens.weight",
                "model.norm.weight",
                "",
                "__metadata__",
                t.name + "x",
                t.name.upper(),
                t.name + "\u0000",
                "\ud800",
            ]
        )
    return "rename"


def m_header_fields(rng: random.Random, d: ModelDir) -> str:
    """A header entry without one of its fields, with an unknown one, or not an object."""
    picked = _tensor(rng, d)
    if picked is not None:
        _, t = picked
        how = rng.randrange(3)
        if how == 0:
            t.fields[rng.choice(["dtype", "shape", "data_offsets"])] = DROP
        elif how == 1:
            t.fields[rng.choice(["extra", "quantization", "dtype "])] = rng.choice([1, "x", None])
        else:
            t.entry = rng.choice([[], "F32", 0, [t.dtype, t.shape], {}])
    return "header-fields"


def m_metadata(rng: random.Random, d: ModelDir) -> str:
    if not d.shards:
        return "metadata"
    shard = rng.choice(list(d.shards.values()))
    shard.metadata = rng.choice(
        [
            {"format": "pt"},
            {"format": "tf", "total_size": "12"},
            {"format": 1},
            {"nested": {"a": 1}},
            {"x" * 1000: "y" * 100_000},
            [],
            "pt",
            None,
            17,
            {},
        ]
    )
    return "metadata"


def m_data(rng: random.Random, d: ModelDir) -> str:
    """NaN, infinity or huge values in a tensor's data, or bit flips."""
    picked = _tensor(rng, d)
    if picked is None:
        return "data"
    _, t = picked
    data = bytearray(t.data)
    size = DTYPE_SIZES.get(t.dtype if isinstance(t.dtype, str) else "", 2)
    n = max(len(data) // size, 1)
    at = rng.choice([0, n - 1, rng.randrange(n), rng.randrange(n)]) * size
    how = rng.randrange(4)
    if how == 0 and at + size <= len(data):
        if t.dtype == "F32":
            v = rng.choice([math.nan, math.inf, -math.inf, 3e38])
            data[at : at + 4] = struct.pack("<f", v)
        elif t.dtype == "F16":
            data[at : at + 2] = rng.choice([b"\x00\x7c", b"\x00\x7e", b"\x00\xfc", b"\xff\x7b"])
        else:  # bf16: infinity, NaN, the largest finite values
            data[at : at + 2] = rng.choice([b"\x80\x7f", b"\xc0\x7f", b"\x80\xff", b"\x7f\x7f"])
    elif how == 1:
        end = min(len(data), at + size * rng.choice([1, 16, n]))
        data[at:end] = b"\xff" * (end - at)
    else:
        flip_bits(rng, data, [1, 8, 64])
    t.data = bytes(data)
    return "data"


# Keys the loader reads; favoured by the config mutations.
CONFIG_KEYS = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "model_type",
    "architectures",
    "tie_word_embeddings",
]


def _config(d: ModelDir) -> dict | None:
    c = d.json.get(CONFIG)
    return c if isinstance(c, dict) else None


def _int(c: dict, key: str, default: int) -> int:
    """`c[key]` if it is (still) an integer, else `default`."""
    v = c.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def m_config_drop(rng: random.Random, d: ModelDir) -> str:
    c = _config(d)
    if c:
        key = rng.choice(CONFIG_KEYS) if rng.random() < 0.8 else rng.choice(list(c))
        c.pop(key, None)
    return "config-drop"


def m_config_value(rng: random.Random, d: ModelDir) -> str:
    """One value of the wrong type or out of range."""
    c = _config(d)
    if c:
        key = rng.choice(CONFIG_KEYS) if rng.random() < 0.9 else rng.choice(list(c))
        old = c.get(key, 1)
        if isinstance(old, int | float) and not isinstance(old, bool) and rng.random() < 0.3:
            c[key] = fuzz_gguf._number(rng, old)
        else:
            c[key] = _odd_value(rng, old)
    return "config-value"


def m_config_sizes(rng: random.Random, d: ModelDir) -> str:
    """Sizes that disagree with each other or with the tensors."""
    c = _config(d)
    if not c:
        return "config-sizes"
    h, heads = _int(c, "hidden_size", 64), _int(c, "num_attention_heads", 4)
    how = rng.randrange(9)
    if how == 0:  # hidden size not divisible by the heads
        c["hidden_size"] = h + rng.choice([1, 2, heads // 2 or 1, -1])
    elif how == 1:
        c["num_attention_heads"] = rng.choice([3, 5, heads + 1, heads * 2, h, h * 2, h + 1])
    elif how == 2:  # KV heads that do not divide the heads
        c["num_key_value_heads"] = rng.choice([3, heads + 1, heads * 2, 0, h])
    elif how == 3:
        c["vocab_size"] = _near(rng, _int(c, "vocab_size", 265))
    elif how == 4:
        c["intermediate_size"] = _near(rng, _int(c, "intermediate_size", 128))
    elif how == 5:
        c["num_hidden_layers"] = rng.choice([0, 1, 2, 3, 9, 1024, 2**20])
    elif how == 6:  # head_dim: odd, zero, a lie, or huge enough that `head_dim * heads` wraps
        hd = h // max(heads, 1)
        wraps = hd + 2**64 // max(heads, 2)
        c["head_dim"] = rng.choice([hd * 2, hd // 2, hd + 1, 0, 1, wraps, 2**63])
    elif how == 7:
        c["max_position_embeddings"] = rng.choice([0, 1, 2, 3, 2**24, 2**24 + 1, 2**40, 2**63])
    else:  # the whole model scaled: consistent sizes, tensors of the old ones
        c["hidden_size"] = h * 2
        c["intermediate_size"] = _int(c, "intermediate_size", 128) * 2
    return "config-sizes"


def m_heads(rng: random.Random, d: ModelDir) -> str:
    """Every head its own keys and values, the K and V projections grown to match (a valid
    model); half the time also a `head_dim` so large that times the heads it wraps around to the
    hidden size."""
    c = _config(d)
    if not c:
        return "heads"
    h, heads = _int(c, "hidden_size", 64), _int(c, "num_attention_heads", 4)
    c["num_key_value_heads"] = heads
    for s in d.shards.values():
        for t in s.tensors:
            shape, n = t.shape, _elements(t.shape)
            if ("k_proj" in t.name or "v_proj" in t.name) and n and isinstance(shape, list):
                t.shape = [h, *shape[1:]]
                want = len(t.data) // n * h * math.prod(shape[1:])
                if 0 < want <= 1 << 22:  # else (sizes already mutated) the data stays
                    t.data = (t.data * (want // len(t.data) + 1))[:want]
    if rng.random() < 0.5 and heads > 0:
        c["head_dim"] = h // heads + 2**64 // heads
    return "heads"


def m_config_float(rng: random.Random, d: ModelDir) -> str:
    """RoPE theta and RMSNorm epsilon: NaN, infinite, zero, negative, tiny, huge."""
    c = _config(d)
    if c:
        key = rng.choice(["rope_theta", "rms_norm_eps"])
        c[key] = rng.choice([*INTERESTING_FLOATS, 1e-300, 1e300, 5e-324, -1e-5, 1, "NaN", 0])
    return "config-float"


def m_config_model(rng: random.Random, d: ModelDir) -> str:
    """Another architecture, RoPE scaling, tied embeddings the other way round."""
    c = _config(d)
    if not c:
        return "config-model"
    how = rng.randrange(5)
    if how == 0:
        c["model_type"] = rng.choice(["mistral", "gpt2", "", "LLAMA", None, 5, ["llama"]])
    elif how == 1:
        c["architectures"] = rng.choice(
            [["GPT2LMHeadModel"], "LlamaForCausalLM", [], [1], None, ["LlamaForCausalLM"] * 3]
        )
    elif how == 2:
        c["model_type"] = rng.choice(["mistral", "qwen2"])
        c["architectures"] = rng.choice([["MistralForCausalLM"], ["LlamaForCausalLM"]])
    elif how == 3:
        c["rope_scaling"] = rng.choice(
            [{"type": "linear", "factor": 2.0}, {"rope_type": "llama3"}, None, "x", 0, {}]
        )
    else:
        c["tie_word_embeddings"] = rng.choice([True, False, None, "yes", 1])
    return "config-model"


def _tokenizer(d: ModelDir) -> dict | None:
    t = d.json.get(TOKENIZER)
    return t if isinstance(t, dict) else None


def _bpe(d: ModelDir) -> dict | None:
    t = _tokenizer(d)
    model = t.get("model") if t else None
    return model if isinstance(model, dict) and isinstance(model.get("vocab"), dict) else None


# Tokens "hi there 42" is made of (the prompt of every case).
PROMPT_TOKENS = ["h", "i", "Ġ", "t", "he", "r", "e", "4", "2"]


def m_vocab(rng: random.Random, d: ModelDir) -> str:
    """A vocabulary larger or smaller than the embeddings, or ids out of range."""
    model = _bpe(d)
    if model is None:
        return "vocab"
    vocab: dict = model["vocab"]
    n = len(vocab)
    how = rng.randrange(6)
    if how == 0:  # more tokens than the model has embeddings
        for i in range(rng.choice([1, 5, 300])):
            vocab[f"<extra_{i}>"] = n + i
    elif how == 1:  # fewer (merges may then name tokens that are gone)
        keep = rng.choice([0, 1, 3, n // 2, n - 1])
        model["vocab"] = dict(list(vocab.items())[:keep])
    elif how == 2:  # one token's id out of range, or shared with another
        token = rng.choice(PROMPT_TOKENS if rng.random() < 0.6 or not vocab else list(vocab))
        vocab[token] = rng.choice([n, n + 1, 2**16, 2**31 - 1, 2**32 - 1, 2**32, -1, 0, 5])
    elif how == 3:  # ids shifted, leaving a gap
        shift = rng.choice([1, 64, 10_000])
        model["vocab"] = {tok: i + shift for tok, i in vocab.items()}
    elif how == 4:
        merges = model.get("merges")
        if isinstance(merges, list):
            bad = rng.choice(["nospace", "a b c", " ", "zz qq", "", ["h", "e", "x"], 5, None])
            merges.insert(rng.randrange(len(merges) + 1), bad)
    else:
        model["type"] = rng.choice(["WordPiece", "Unigram", "WordLevel", "bpe", "", None, 3])
    return "vocab"


def m_added_tokens(rng: random.Random, d: ModelDir) -> str:
    t = _tokenizer(d)
    if not t or not isinstance(t.get("added_tokens"), list) or not t["added_tokens"]:
        return "added-tokens"
    added = t["added_tokens"]
    tok = rng.choice(added)
    how = rng.randrange(4)
    if how == 0 and isinstance(tok, dict):
        tok["id"] = rng.choice([265, 266, 10_000, 2**31, 2**32 - 1, -1, "2", None])
    elif how == 1:
        added.append(
            {
                "id": rng.choice([265, 300, 2]),
                "content": rng.choice(["<|new|>", "<|im_end|>", "h", ""]),
                "special": rng.choice([True, False]),
            }
        )
    elif how == 2 and isinstance(tok, dict):
        tok["content"] = rng.choice(["", "hi", "h", " ", 5, None])
    else:
        t["added_tokens"] = rng.choice([None, {}, [1], "x"])
    return "added-tokens"


def _deep(depth: int) -> list:
    """Lists nested `depth` deep."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def m_tokenizer_parts(rng: random.Random, d: ModelDir) -> str:
    """The pre-tokenizer, decoder, normalizer or post-processor of another kind or garbage."""
    t = _tokenizer(d)
    if t:
        key = rng.choice(["pre_tokenizer", "decoder", "normalizer", "post_processor", "model"])
        t[key] = rng.choice(
            [
                None,
                {},
                {"type": "Nope"},
                {"type": "ByteLevel"},
                {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"},
                {"type": "Sequence", "pretokenizers": [None]},
                {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"},
                {"type": "Split", "pattern": {"Regex": "(a*)*$"}, "behavior": "Isolated"},
                {"type": "Sequence", "decoders": _deep(rng.choice([100, 128, 129, 300]))},
                [],
                "x",
            ]
        )
    return "tokenizer-parts"


def m_tokenizer_config(rng: random.Random, d: ModelDir) -> str:
    """BOS and EOS missing, unknown or of the wrong type; a chat template of the wrong type."""
    c = d.json.get(TOKENIZER_CONFIG)
    if not isinstance(c, dict):
        return "tokenizer-config"
    key = rng.choice(["bos_token", "eos_token", "chat_template", "add_bos_token"])
    how = rng.randrange(3)
    if how == 0:
        c.pop(key, None)
    elif key == "chat_template":
        c[key] = rng.choice(
            [5, None, ["x"], [{"name": "default", "template": "{{ x }}"}], {"a": 1}, "{% if %}"]
        )
    elif key == "add_bos_token":
        c[key] = rng.choice(["true", 1, None, True, []])
    else:
        c[key] = rng.choice(
            ["<nope>", "", None, 5, {"content": "<|im_end|>"}, {"content": 5}, ["<|im_end|>"]]
        )
        if how == 2:
            c["add_bos_token"] = True
    return "tokenizer-config"


def m_index(rng: random.Random, d: ModelDir) -> str:
    """The sharded directory's index: a missing shard, a tensor in two shards, a path out of the
    directory; or the index itself odd."""
    index = d.json.get(INDEX)
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        return "index"
    if not index["weight_map"] or not d.shards:
        return "index"
    weight_map: dict = index["weight_map"]
    name = rng.choice(list(weight_map))
    how = rng.randrange(6)
    if how == 0:
        weight_map[name] = rng.choice(
            ["model-00003-of-00002.safetensors", "", "missing.safetensors", "config.json"]
        )
    elif how == 1:  # the tensor in both shards (the index names one)
        pairs = [(s, t) for s in d.shards.values() for t in s.tensors if t.name == name]
        if pairs:
            here, t = pairs[0]
            there = next((s for s in d.shards.values() if s is not here), here)
            there.tensors.append(copy.copy(t))
    elif how == 2:
        weight_map[name] = rng.choice(
            ["../x.safetensors", "/etc/passwd", "../../model.safetensors", "sub/../../x"]
        )
    elif how == 3:  # a shard missing altogether
        del d.shards[rng.choice(list(d.shards))]
    elif how == 4:
        index["weight_map"] = rng.choice([None, [], "x", {}, {name: 5}])
    else:
        index["metadata"] = rng.choice([{"total_size": -1}, {"total_size": "x"}, None, 2**70])
    return "index"


def m_drop_file(rng: random.Random, d: ModelDir) -> str:
    """A JSON file missing, or a stray one added."""
    how = rng.randrange(3)
    if how == 0:
        d.json.pop(rng.choice([CONFIG, TOKENIZER, TOKENIZER_CONFIG, INDEX]), None)
    elif how == 1 and d.shards:
        # A second copy of a shard under another name: every tensor twice.
        name = rng.choice(list(d.shards))
        d.shards["consolidated.safetensors"] = copy.deepcopy(d.shards[name])
    else:
        d.json["chat_template.jinja"] = rng.choice(["{{ x", "{% for %}", 5])
    return "drop-file"


# The safetensors header's mutations, the config's, the tokenizer's and the index's; each list
# holds one mutation per entry (repeats weigh one more).
MODEL_MUTATIONS = [
    m_dtype,
    m_dtype,
    m_shape,
    m_shape,
    m_offsets,
    m_drop,
    m_dup,
    m_rename,
    m_header_fields,
    m_metadata,
    m_data,
    m_data,
    m_config_drop,
    m_config_value,
    m_config_value,
    m_config_sizes,
    m_config_sizes,
    m_heads,
    m_config_float,
    m_config_model,
    m_vocab,
    m_vocab,
    m_added_tokens,
    m_tokenizer_parts,
    m_tokenizer_config,
    m_drop_file,
]


# ---------------------------------------------------------------------------------------------
# Mutations of the written files: each takes a random source, the files (name -> bytes) and the
# safetensors files' layouts.


def _shard_name(rng: random.Random, files: dict, layouts: dict[str, Layout]) -> str | None:
    names = [n for n in layouts if n in files]
    return rng.choice(names) if names else None


def b_prefix(rng: random.Random, files: dict, layouts: dict[str, Layout]) -> str:
    """The 8-byte header length: huge, zero, too small, past the end."""
    name = _shard_name(rng, files, layouts)
    if name is None:
        return "prefix"
    buf = files[name]
    (n,) = struct.unpack_from("<Q", buf)
    new = rng.choice(
        [
            0,
            1,
            2,
            7,
            n - 1,
            n - 8,
            n + 1,
            n + 8,
            _near(rng, n),
            len(buf) - 8,
            len(buf),
            len(buf) + 1,
            100_000_000,
            100_000_001,
            *INTERESTING_U64[-8:],
        ]
    )
    struct.pack_into("<Q", buf, 0, new & (2**64 - 1))
    return "prefix"


def b_header_text(rng: random.Random, files: dict, layouts: dict[str, Layout]) -> str:
    """A header that is not JSON, not an object, cut short, not UTF-8, or padded oddly; its
    length prefix then matches what is there."""
    name = _shard_name(rng, files, layouts)
    if name is None:
        return "header-text"
    buf, lay = files[name], layouts[name]
    header = bytes(buf[8 : lay.header_end]).rstrip(b" ")
    how = rng.randrange(7)
    if how == 0:
        new = rng.choice([b"[]", b"1", b'"x"', b"null", b"true", b"[{}]"])
    elif how == 1:
        new = header[: rng.randrange(len(header))]
    elif how == 2:
        new = rng.choice([b"{not json", b"{'a': 1}", b"\x00" * 8, b"", b"{}}", b"{,}"])
    elif how == 3:
        k = rng.randrange(len(header))
        new = header[:k] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"]) + header[k:]
    elif how == 4:  # padding that is not a multiple of 8, or of NULs
        new = header + rng.choice([b"", b" ", b"\x00" * 3, b"\x00" * 8, b"\n"])
    elif how == 5:  # trailing text after the object
        new = header + rng.choice([b" x", b"{}", b",", b"\x00"])
    else:  # a deep nesting
        depth = rng.choice([128, 10_000])
        new = b'{"__metadata__": ' + b"[" * depth + b"]" * depth + b", " + header[1:]
    files[name] = bytearray(struct.pack("<Q", len(new)) + new + buf[lay.header_end :])
    return "header-text"


def b_truncate(rng: random.Random, files: dict, layouts: dict[str, Layout]) -> str:
    """A file cut short (a safetensors file anywhere, its header or its data; a JSON file), or
    with bytes past its end."""
    name = _shard_name(rng, files, layouts) if rng.random() < 0.7 else None
    if name is None:
        name = rng.choice(sorted(files))
    buf = files[name]
    if rng.random() < 0.15:
        buf.extend(rng.choice([b"\x00", b"\x00" * 8, rng.randbytes(64)]))
        return "append"
    points = [rng.randrange(max(len(buf), 1)), len(buf) - 1, len(buf) - rng.randrange(1, 64), 0]
    if name in layouts:
        points += [8, 4, layouts[name].header_end, layouts[name].header_end - 1]
    del buf[max(rng.choice(points), 0) :]
    return "truncate"


def b_flip_header(rng: random.Random, files: dict, layouts: dict[str, Layout]) -> str:
    name = _shard_name(rng, files, layouts)
    if name is not None:
        buf = files[name]
        for _ in range(rng.choice([1, 2, 8])):
            k = rng.randrange(min(layouts[name].header_end, len(buf)))
            buf[k] ^= 1 << rng.randrange(8)
    return "flip-header"


def b_flip_data(rng: random.Random, files: dict, layouts: dict[str, Layout]) -> str:
    name = _shard_name(rng, files, layouts)
    if name is not None:
        flip_bits(rng, files[name], [1, 16, 256], start=layouts[name].header_end)
    return "flip-data"


def b_json_text(rng: random.Random, files: dict, layouts: dict[str, Layout]) -> str:
    """A JSON file that is not JSON, cut short, not UTF-8, or NaN where a number was."""
    names = [n for n in files if n not in layouts]
    if not names:
        return "json-text"
    name = rng.choice(names)
    buf = files[name]
    how = rng.randrange(5)
    if how == 0:
        files[name] = bytearray(rng.choice([b"", b"{", b"[]", b"null", b"1", b"\xff\xfe", b"{}"]))
    elif how == 1:
        del buf[rng.randrange(max(len(buf), 1)) :]
    elif how == 2:
        k = rng.randrange(max(len(buf), 1))
        buf[k:k] = rng.choice([b"\xff", b"\xc3", b"\x00", b"}", b'"'])
    elif how == 3:  # a number replaced by NaN, Infinity or a huge literal
        digits = [i for i, c in enumerate(buf) if chr(c).isdigit()]
        if digits:
            k = rng.choice(digits)
            buf[k : k + 1] = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 40])
    else:
        files[name] = bytearray(b'{"a": ' * 200 + b"1" + b"}" * 200)
    return "json-text"


BYTE_MUTATIONS = [
    b_prefix,
    b_prefix,
    b_header_text,
    b_header_text,
    b_truncate,
    b_truncate,
    b_flip_header,
    b_flip_data,
    b_json_text,
    b_json_text,
]


def make_case(seed: int, index: int, bases: list[tuple[str, ModelDir]]) -> tuple[str, dict]:
    """Case `index` of run `seed`: its files (name -> bytes), always the same for the same bases."""
    rng = random.Random(f"{seed}:{index}")
    label, base = rng.choice(bases)
    d = copy.deepcopy(base)
    names = []
    n_model = rng.choice([0, 1, 1, 1, 2, 3])
    n_bytes = rng.choice([1, 0, 0]) if n_model else 1
    for _ in range(n_model):
        mutation = rng.choice(MODEL_MUTATIONS)
        if INDEX in d.json and rng.random() < 0.3:
            mutation = m_index
        names.append(mutation(rng, d))
    files, layouts = serialize(d)
    for _ in range(n_bytes):
        names.append(rng.choice(BYTE_MUTATIONS)(rng, files, layouts))
    return f"{label}:{'+'.join(names)}", {k: bytes(v) for k, v in sorted(files.items())}


# ---------------------------------------------------------------------------------------------
# Cases as directories, for `fuzz_driver`.


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha1(files[name]).digest())
    return h.hexdigest()


def encode_files(files: dict[str, bytes]) -> bytes:
    """A case's files in one value (for `Failure.data`): JSON of name -> hex."""
    return json.dumps({k: v.hex() for k, v in sorted(files.items())}).encode()


def decode_files(data: bytes) -> dict[str, bytes]:
    return {k: bytes.fromhex(v) for k, v in json.loads(data).items()}


def saved_cases(directory: Path = REGRESSIONS) -> list[Path]:
    return sorted(p for p in directory.glob("*") if p.is_dir()) if directory.is_dir() else []


def save_regression(failure: Failure, directory: Path = REGRESSIONS) -> Path:
    """The failing case as a directory `<first mutation>-<digest>` under `directory`."""
    files = decode_files(failure.data)
    path = directory / f"{failure.first_mutation}-{digest(files)[:8]}"
    shutil.rmtree(path, ignore_errors=True)
    write_dir(path, files)
    return path


FORMAT = Format(
    bases=base_dirs,
    make_case=make_case,
    write_case=write_dir,
    encode=encode_files,
    save_regression=save_regression,
)


def main(argv: list[str] | None = None) -> int:
    return fuzz_driver.main(
        FORMAT,
        argv,
        description=__doc__.split("\n\n")[0],
        regressions=REGRESSIONS,
        tmp_prefix="smolgen-fuzz-st-",
        summary_seconds=True,
    )


if __name__ == "__main__":
    sys.exit(main())
