"""A structure-aware fuzzer for smolgen's model loading.

Valid tiny GGUF files (``tiny_llama.write_gguf``, in several tensor types and shapes) are parsed
into their parts (metadata, tensor table, tensor data), mutated where a broken writer, a bad
download or a hostile file would differ (header counts, metadata value types and lengths, array
lengths, tensor dimensions, types, offsets, the alignment, duplicated or missing tensors, wrong
vocabulary sizes, truncation, bit flips in the data and in quantization scales), and written
back. Each case loads with ``smolgen.load`` in a worker subprocess and, when it loads, runs one
short ``generate``. The outcome must be a success or an exception of a ``smolgen.SmolgenError``
class: never a crash, a hang, a Rust panic, an ``InternalError``, an untyped exception, a load
error that does not name the file, or a model-file problem blamed on the caller's arguments
(``fuzz_driver.judge``).

Long runs (failing files are saved under ``tests/regressions/``)::

    python tests/fuzz_gguf.py --seconds 1800 --seed 1

``tests/test_fuzz_gguf.py`` runs a fixed number of cases and replays every saved file.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import fuzz_driver
from fuzz_driver import Failure, Format

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "regressions"

# GGUF metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<B",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}
INTEGER = (U8, I8, U16, I16, U32, I32, U64, I64)

# ggml type id -> (elements, bytes) per block, as ggml lays them out.
BLOCKS = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    20: (32, 18),  # IQ4_NL
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    26: (1, 4),  # I32
    28: (1, 8),  # F64
    30: (1, 2),  # BF16
}
# Where each type keeps its f16 scale(s) inside a block (byte offsets).
SCALE_OFFSETS = {
    2: (0,),
    3: (0, 2),
    6: (0,),
    7: (0, 2),
    8: (0,),
    9: (0, 2),
    10: (80, 82),
    11: (108,),
    12: (0, 2),
    13: (0, 2),
    14: (208,),
}


# ---------------------------------------------------------------------------------------------
# The file as parts, and back to bytes.


@dataclass
class Kv:
    key: str
    vtype: int
    # A scalar, a string, or for arrays `(element type, [values])`.
    value: object


@dataclass
class TensorEntry:
    name: str
    dims: list[int]  # innermost first, as GGUF stores them
    ttype: int
    data: bytes
    # Where the data goes relative to the data section; None lays it out after the previous one.
    offset: int | None = None


@dataclass
class Gguf:
    version: int
    kvs: list[Kv]
    tensors: list[TensorEntry]


@dataclass
class Layout:
    """Where each field of a serialized file lies: `(kind, offset, struct format)`."""

    fields: list[tuple[str, int, str]] = field(default_factory=list)
    data_start: int = 0
    # (start, length, ggml type) of each tensor's data.
    spans: list[tuple[int, int, int]] = field(default_factory=list)


def tensor_bytes(dims: list[int], ttype: int) -> int | None:
    elements, size = BLOCKS.get(ttype, (0, 0))
    count = math.prod(dims)
    if elements == 0 or dims[0] % elements:
        return None
    return count // elements * size


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        s = self.buf[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def value(self, vtype: int):
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            elem = self.take("<I")
            n = self.take("<Q")
            return (elem, [self.value(elem) for _ in range(n)])
        v = self.take(SCALAR[vtype])
        return bool(v) if vtype == BOOL else v


def parse(buf: bytes) -> Gguf:
    """The parts of a valid GGUF file (the writer's output: no checks here)."""
    r = _Reader(buf)
    assert buf[:4] == b"GGUF"
    r.pos = 4
    version = r.take("<I")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    kvs = []
    for _ in range(n_kv):
        key = r.string()
        vtype = r.take("<I")
        kvs.append(Kv(key, vtype, r.value(vtype)))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.take("<Q") for _ in range(r.take("<I"))]
        ttype, offset = r.take("<I"), r.take("<Q")
        infos.append((name, dims, ttype, offset))
    alignment = next((int(kv.value) for kv in kvs if kv.key == "general.alignment"), 32)
    data_start = -(-r.pos // alignment) * alignment
    tensors = []
    for name, dims, ttype, offset in infos:
        size = tensor_bytes(dims, ttype)
        assert size is not None
        start = data_start + offset
        tensors.append(TensorEntry(name, dims, ttype, bytes(buf[start : start + size])))
    return Gguf(version, kvs, tensors)


def _pack_scalar(vtype: int, value: object) -> bytes:
    fmt = SCALAR[vtype]
    if vtype in (F32, F64):
        try:
            return struct.pack(fmt, float(value))  # type: ignore[arg-type]
        except (OverflowError, TypeError, ValueError):
            return struct.pack(fmt, math.inf)
    try:
        v = int(value)  # type: ignore[call-overload]
    except (OverflowError, TypeError, ValueError):
        v = 0
    bits = struct.calcsize(fmt) * 8
    v &= (1 << bits) - 1
    if fmt.islower() and v >= 1 << (bits - 1):  # signed: back into range
        v -= 1 << bits
    return struct.pack(fmt, v)


def serialize(g: Gguf) -> tuple[bytearray, Layout]:
    out, lay = bytearray(), Layout()

    def put(kind: str, fmt: str, value: int) -> None:
        lay.fields.append((kind, len(out), fmt))
        out.extend(struct.pack(fmt, value & ((1 << (8 * struct.calcsize(fmt))) - 1)))

    def put_string(kind: str, s: str) -> None:
        raw = s.encode("utf-8", "surrogatepass")
        put(kind, "<Q", len(raw))
        out.extend(raw)

    def put_value(vtype: int, value: object) -> None:
        if vtype == STRING:
            put_string("string length", str(value))
        elif vtype == ARRAY:
            elem, items = value  # type: ignore[misc]
            put("array type", "<I", elem)
            put("array length", "<Q", len(items))
            for item in items:
                put_value(elem, item)
        elif vtype in SCALAR:
            lay.fields.append(("value", len(out), SCALAR[vtype]))
            out.extend(_pack_scalar(vtype, value))

    out.extend(b"GGUF")
    put("version", "<I", g.version)
    put("tensor count", "<Q", len(g.tensors))
    put("metadata count", "<Q", len(g.kvs))
    alignment = 32
    for kv in g.kvs:
        put_string("key length", kv.key)
        put("value type", "<I", kv.vtype)
        put_value(kv.vtype, kv.value)
        if kv.key == "general.alignment" and kv.vtype in INTEGER:
            a = int(kv.value)  # type: ignore[call-overload]
            if 0 < a <= 1 << 16 and a & (a - 1) == 0:
                alignment = a
    # Offsets first, so the table can name them.
    offsets, at = [], 0
    for t in g.tensors:
        at = -(-at // alignment) * alignment
        offsets.append(at if t.offset is None else t.offset)
        at += len(t.data)
    for t, offset in zip(g.tensors, offsets, strict=True):
        put_string("tensor name length", t.name)
        put("rank", "<I", len(t.dims))
        for d in t.dims:
            put("dimension", "<Q", d)
        put("tensor type", "<I", t.ttype)
        put("tensor offset", "<Q", offset)
    lay.data_start = -(-len(out) // alignment) * alignment
    out.extend(bytes(lay.data_start - len(out)))
    at = 0
    for t in g.tensors:
        at = -(-at // alignment) * alignment
        start = lay.data_start + at
        out.extend(bytes(start - len(out)))
        out.extend(t.data)
        lay.spans.append((start, len(t.data), t.ttype))
        at += len(t.data)
    out.extend(bytes(-len(out) % alignment))  # as ggml's writer pads the last tensor
    return out, lay


# ---------------------------------------------------------------------------------------------
# Valid files to start from.


def base_files(directory: Path) -> list[tuple[str, bytes]]:
    """Tiny valid GGUF files in several tensor types and shapes, written once per directory."""
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
    plans: list[tuple[str, LlamaConfig, str, dict[str, str] | None, bool]] = [
        ("f32", small, "F32", None, False),
        ("f16", small, "F16", None, False),
        ("bf16", small, "BF16", None, True),
        ("q8_0", small, "Q8_0", None, False),
        ("q4_0", small, "Q4_0", None, True),
        ("q4_1", small, "Q4_1", None, False),
        ("q5_0", small, "Q5_0", {"ffn_down": "Q8_0"}, False),
        ("q5_1", tiny_llama.CONFIG, "Q5_1", None, False),
        ("q4_k", tiny_llama.K_CONFIG, "Q4_K", {"ffn_down": "Q6_K", "token_embd": "Q6_K"}, False),
        ("q2_k", tiny_llama.K_CONFIG, "Q2_K", {"attn_v": "Q3_K", "ffn_up": "Q5_K"}, True),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for label, cfg, qtype, qtypes, untied in plans:
        path = directory / f"base-{label}.gguf"
        if not path.exists():
            weights = tiny_llama.random_weights(seed=len(out), cfg=cfg)
            if untied:
                rng = np.random.default_rng(len(out) + 100)
                weights["output.weight"] = (
                    rng.standard_normal((cfg.vocab_size, cfg.hidden_size)) / 8
                ).astype(np.float32)
            tmp = path.with_suffix(".tmp")
            tiny_llama.write_gguf(tmp, weights, cfg, qtype, qtypes=qtypes)
            tmp.replace(path)
        out.append((label, path.read_bytes()))
    return out


# ---------------------------------------------------------------------------------------------
# Mutations. Each takes a random source and the parts (or the bytes), changes them in place and
# returns a short name for what it did.

INTERESTING_U64 = [0, 1, 2, 3, 7, 31, 32, 33, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
INTERESTING_U64 += [2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
INTERESTING_FLOATS = [0.0, -0.0, -1.0, 1e-30, 1e30, 3.4e38, math.inf, -math.inf, math.nan]
GGML_IDS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 23, 24, 26, 28, 29, 30]
GGML_IDS += [31, 36, 39, 41, 99, 2**31, 2**32 - 1]


def _near(rng: random.Random, v: int) -> int:
    return rng.choice(
        [v + 1, v - 1, v * 2, v // 2, v + rng.randint(2, 64), rng.randint(0, 2 * abs(v) + 8)]
    )


def _number(rng: random.Random, v: object) -> object:
    if isinstance(v, float):
        return rng.choice([*INTERESTING_FLOATS, v * 2, -v, v * 1e20])
    if isinstance(v, int):
        return rng.choice([*INTERESTING_U64, -1, -(2**31), _near(rng, v), _near(rng, v)])
    return v


def _kv_index(rng: random.Random, g: Gguf) -> int | None:
    if not g.kvs:
        return None
    # The architecture's keys and the tokenizer's are the ones a loader reads: favour them.
    keyed = [i for i, kv in enumerate(g.kvs) if kv.key.startswith(("llama.", "tokenizer."))]
    return rng.choice(keyed) if keyed and rng.random() < 0.8 else rng.randrange(len(g.kvs))


def m_kv_drop(rng: random.Random, g: Gguf) -> str:
    i = _kv_index(rng, g)
    if i is not None:
        del g.kvs[i]
    return "kv-drop"


def m_kv_dup(rng: random.Random, g: Gguf) -> str:
    i = _kv_index(rng, g)
    if i is not None:
        kv = g.kvs[i]
        g.kvs.insert(rng.randrange(len(g.kvs) + 1), Kv(kv.key, kv.vtype, kv.value))
    return "kv-dup"


def m_kv_retype(rng: random.Random, g: Gguf) -> str:
    """The same key with a value of another type: a number as another width or a string, a
    string as a number, an array of other elements."""
    i = _kv_index(rng, g)
    if i is None:
        return "kv-retype"
    kv = g.kvs[i]
    if kv.vtype == ARRAY:
        elem, items = kv.value  # type: ignore[misc]
        new = rng.choice([t for t in (*SCALAR, STRING) if t != elem])
        if new == STRING:
            items = [str(x) for x in items]
        elif elem == STRING:
            items = [len(str(x)) for x in items]
        kv.value = (new, items)
    elif kv.vtype == STRING:
        kv.vtype = rng.choice([U32, I64, F32, BOOL, ARRAY])
        kv.value = (STRING, [kv.value]) if kv.vtype == ARRAY else len(str(kv.value))
    else:
        kv.vtype = rng.choice([t for t in (*SCALAR, STRING) if t != kv.vtype])
        if kv.vtype == STRING:
            kv.value = str(kv.value)
        elif kv.vtype == BOOL:
            kv.value = bool(kv.value)
    return "kv-retype"


def m_kv_value(rng: random.Random, g: Gguf) -> str:
    i = _kv_index(rng, g)
    if i is None:
        return "kv-value"
    kv = g.kvs[i]
    if kv.vtype == STRING:
        kv.value = rng.choice(["", "llama", "gpt2", "\u0000", "x" * 300, "mamba", "{{ junk"])
    elif kv.vtype == ARRAY:
        elem, items = kv.value  # type: ignore[misc]
        items = list(items)
        if items and rng.random() < 0.5:
            j = rng.randrange(len(items))
            items[j] = _number(rng, items[j]) if elem != STRING else rng.choice(["", items[0]])
        else:
            items = items[: rng.randrange(len(items) + 1)]
        kv.value = (elem, items)
    elif kv.vtype == BOOL:
        kv.vtype, kv.value = U8, rng.choice([2, 255])
    else:
        kv.value = _number(rng, kv.value)
    return "kv-value"


def _find(g: Gguf, key: str) -> Kv | None:
    return next((kv for kv in g.kvs if kv.key == key), None)


def _items(kv: Kv | None) -> list | None:
    """An array's values, if `kv` is (still) an array."""
    if kv is None or kv.vtype != ARRAY:
        return None
    return list(kv.value[1])  # type: ignore[index]


def m_vocab(rng: random.Random, g: Gguf) -> str:
    """A vocabulary size that disagrees with the token list, the types or the embedding."""
    tokens, types = _find(g, "tokenizer.ggml.tokens"), _find(g, "tokenizer.ggml.token_type")
    token_items, type_items = _items(tokens), _items(types)
    n = len(token_items) if token_items is not None else 265
    choice = rng.randrange(6)
    if choice == 0 or (choice in (1, 2, 3) and not token_items):
        size = rng.choice([0, 1, n - 1, n + 1, n * 2, 2**24, 2**32])
        kv = _find(g, "llama.vocab_size")
        if kv is None:
            g.kvs.append(Kv("llama.vocab_size", U32, size))
        else:
            kv.value = size
    elif choice == 1 and tokens and token_items:
        extra = [f"<extra_{i}>" for i in range(rng.choice([1, 5, 300]))]
        tokens.value = (STRING, token_items + extra)
        if types and type_items is not None and rng.random() < 0.7:
            types.value = (types.value[0], type_items + [1] * len(extra))  # type: ignore[index]
        if rng.random() < 0.5:
            g.kvs.append(Kv("llama.vocab_size", U32, n))
    elif choice == 2 and tokens and token_items:
        cut = rng.choice([0, 1, 3, n // 2, n - 1])
        tokens.value = (STRING, token_items[:cut])
        if types and type_items is not None and rng.random() < 0.7:
            types.value = (types.value[0], type_items[:cut])  # type: ignore[index]
    elif choice == 3 and tokens and token_items:
        token_items[rng.randrange(n)] = token_items[rng.randrange(n)]
        tokens.value = (STRING, token_items)
    elif choice == 4:
        merges = _find(g, "tokenizer.ggml.merges")
        merge_items = _items(merges)
        if merges and merge_items is not None:
            bad = rng.choice(["nospace", "a b c", " ", "zz qq", "", "\u00ff \u00fe"])
            merges.value = (STRING, [*merge_items, bad])
    else:
        for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            kv = _find(g, key)
            if kv:
                kv.value = rng.choice([n, n + 1, 2**32 - 1, 0])
    return "vocab"


def m_alignment(rng: random.Random, g: Gguf) -> str:
    value = rng.choice([1, 2, 8, 64, 4096, 0, 3, 48, 2**20, 2**21, 2**40])
    vtype = rng.choice([U32, U32, U64, I32, U8, STRING])
    g.kvs = [kv for kv in g.kvs if kv.key != "general.alignment"]
    g.kvs.insert(0, Kv("general.alignment", vtype, str(value) if vtype == STRING else value))
    return "alignment"


def m_tensor_drop(rng: random.Random, g: Gguf) -> str:
    if g.tensors:
        del g.tensors[rng.randrange(len(g.tensors))]
    return "tensor-drop"


def m_tensor_dup(rng: random.Random, g: Gguf) -> str:
    if g.tensors:
        t = rng.choice(g.tensors)
        g.tensors.insert(
            rng.randrange(len(g.tensors) + 1), TensorEntry(t.name, list(t.dims), t.ttype, t.data)
        )
    return "tensor-dup"


def m_tensor_rename(rng: random.Random, g: Gguf) -> str:
    if g.tensors:
        t = rng.choice(g.tensors)
        other = rng.choice(g.tensors).name
        t.name = rng.choice(
            [other, "blk.9.attn_q.weight", "output.weight", "", "token_embd.weight", t.name + "x"]
        )
    return "tensor-rename"


def _resize(rng: random.Random, t: TensorEntry) -> None:
    """Data of the size the (changed) dims and type call for: random bytes, zeros or the old
    bytes repeated."""
    size = tensor_bytes(t.dims, t.ttype)
    if size is None or size > 1 << 22:
        return
    how = rng.randrange(3)
    if how == 0:
        t.data = rng.randbytes(size)
    elif how == 1:
        t.data = bytes(size)
    else:
        t.data = (t.data * (size // max(len(t.data), 1) + 1))[:size]


def m_tensor_dims(rng: random.Random, g: Gguf) -> str:
    if not g.tensors:
        return "tensor-dims"
    t = rng.choice(g.tensors)
    dims = list(t.dims)
    how = rng.randrange(6)
    j = rng.randrange(len(dims))
    if how == 0 and len(dims) > 1:
        dims.reverse()
    elif how == 1:
        dims[j] = _near(rng, dims[j])
    elif how == 2:
        dims.append(rng.choice([1, 2]))
    elif how == 3 and len(dims) > 1:
        dims.pop()
    elif how == 4:
        dims[j] = rng.choice([0, 1, 2**32, 2**63])
    else:
        dims = [dims[0] * 2, *dims[1:]] if rng.random() < 0.5 else [math.prod(dims)]
    t.dims = [max(0, d) for d in dims]
    if rng.random() < 0.6:
        _resize(rng, t)
    return "tensor-dims"


def m_tensor_type(rng: random.Random, g: Gguf) -> str:
    if not g.tensors:
        return "tensor-type"
    t = rng.choice(g.tensors)
    t.ttype = rng.choice(GGML_IDS)
    if rng.random() < 0.7:
        _resize(rng, t)
    return "tensor-type"


def m_tensor_offset(rng: random.Random, g: Gguf) -> str:
    if len(g.tensors) < 2:
        return "tensor-offset"
    t = rng.choice(g.tensors)
    # Laid out without overrides, to know where the others go.
    at, starts = 0, []
    for u in g.tensors:
        at = -(-at // 32) * 32
        starts.append(at)
        at += len(u.data)
    t.offset = rng.choice(
        [rng.choice(starts), rng.choice(starts) + 32, 0, at, at + 32, 1, 2**40, 2**64 - 32]
    )
    return "tensor-offset"


def m_tensor_data(rng: random.Random, g: Gguf) -> str:
    """NaN, infinity or huge values in a tensor's data, in its scales for quantized types."""
    if not g.tensors:
        return "tensor-data"
    t = rng.choice(g.tensors)
    data = bytearray(t.data)
    _, size = BLOCKS.get(t.ttype, (1, 1))
    blocks = max(len(data) // size, 1)
    where = rng.choice([0, blocks - 1, rng.randrange(blocks), rng.randrange(blocks)])
    at = where * size
    how = rng.randrange(5)
    if how == 0 and t.ttype in SCALE_OFFSETS:
        for off in SCALE_OFFSETS[t.ttype]:
            if at + off + 2 <= len(data):
                data[at + off : at + off + 2] = rng.choice(
                    [b"\x00\x7c", b"\x00\x7e", b"\x00\xfc", b"\xff\x7b"]
                )
    elif how == 1 and t.ttype == 0 and at + 4 <= len(data):
        data[at : at + 4] = struct.pack("<f", rng.choice([math.nan, math.inf, -math.inf, 3e38]))
    elif how == 2 and t.ttype in (1, 30) and at + 2 <= len(data):
        data[at : at + 2] = rng.choice([b"\x00\x7c", b"\x00\x7e", b"\x80\x7f", b"\xc0\x7f"])
    elif how == 3:
        # Every byte 0xff: NaN in every float format, NaN scales in every quantized one.
        end = min(len(data), at + size * rng.choice([1, 4, blocks]))
        data[at:end] = b"\xff" * (end - at)
    else:
        flip_bits(rng, data, [1, 8, 64])
    t.data = bytes(data)
    return "tensor-data"


def m_version(rng: random.Random, g: Gguf) -> str:
    g.version = rng.choice([0, 1, 2, 4, 2**32 - 1])
    return "version"


MODEL_MUTATIONS = [
    m_kv_drop,
    m_kv_dup,
    m_kv_retype,
    m_kv_value,
    m_vocab,
    m_alignment,
    m_tensor_drop,
    m_tensor_dup,
    m_tensor_rename,
    m_tensor_dims,
    m_tensor_type,
    m_tensor_type,
    m_tensor_offset,
    m_tensor_data,
    m_tensor_data,
    m_version,
]


def b_field(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    """A lie in one field of the header, written in place (nothing else moves): a count, a
    length, a type, a rank, a dimension or an offset."""
    kinds = sorted({kind for kind, _, _ in lay.fields if kind != "value"})
    kind = rng.choice(kinds)
    _, offset, fmt = rng.choice([f for f in lay.fields if f[0] == kind])
    (old,) = struct.unpack_from(fmt, buf, offset)
    bits = struct.calcsize(fmt) * 8
    if kind in ("value type", "array type"):
        new = rng.choice([*range(14), 255, 2**31])
    elif kind == "tensor type":
        new = rng.choice(GGML_IDS)
    elif kind == "tensor offset":
        new = rng.choice([old + 32, old - 32, old + 1, old * 2, 0, *INTERESTING_U64])
    else:
        new = rng.choice([_near(rng, old), _near(rng, old), *INTERESTING_U64])
    struct.pack_into(fmt, buf, offset, new & ((1 << bits) - 1))
    return f"field-{kind.replace(' ', '-')}"


def b_truncate(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    cut = rng.choice(
        [rng.randrange(len(buf)), lay.data_start, len(buf) - 1, len(buf) - rng.randrange(1, 64)]
    )
    del buf[max(cut, 0) :]
    return "truncate"


def flip_bits(rng: random.Random, buf: bytearray, counts: list[int], start: int = 0) -> None:
    """Flips one random bit of ``buf[start:]``, ``rng.choice(counts)`` times (each a no-op
    while that part is empty)."""
    for _ in range(rng.choice(counts)):
        if len(buf) > start:
            k = rng.randrange(start, len(buf))
            buf[k] ^= 1 << rng.randrange(8)


def b_flip_header(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    for _ in range(rng.choice([1, 2, 8])):
        k = rng.randrange(min(lay.data_start, len(buf)))
        buf[k] ^= 1 << rng.randrange(8)
    return "flip-header"


def b_flip_data(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    if len(buf) > lay.data_start:
        for _ in range(rng.choice([1, 16, 256])):
            k = rng.randrange(lay.data_start, len(buf))
            buf[k] ^= 1 << rng.randrange(8)
    return "flip-data"


def b_splice(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    k = rng.randrange(min(lay.data_start, len(buf)))
    if rng.random() < 0.5:
        del buf[k : k + rng.choice([1, 4, 8])]
    else:
        buf[k:k] = rng.randbytes(rng.choice([1, 4, 8]))
    return "splice"


BYTE_MUTATIONS = [b_field, b_field, b_field, b_truncate, b_flip_header, b_flip_data, b_splice]


def make_case(seed: int, index: int, bases: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """Case `index` of run `seed`: always the same bytes for the same base files."""
    rng = random.Random(f"{seed}:{index}")
    label, base = rng.choice(bases)
    g = parse(base)
    names = []
    n_model = rng.choice([0, 1, 1, 1, 2, 3])
    n_bytes = rng.choice([1, 0]) if n_model else 1
    for _ in range(n_model):
        names.append(rng.choice(MODEL_MUTATIONS)(rng, g))
    buf, lay = serialize(g)
    for _ in range(n_bytes):
        names.append(rng.choice(BYTE_MUTATIONS)(rng, buf, lay))
    return f"{label}:{'+'.join(names)}", bytes(buf)


# ---------------------------------------------------------------------------------------------
# Cases as files, for `fuzz_driver`.


def save_regression(failure: Failure, directory: Path = REGRESSIONS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(failure.data).hexdigest()[:8]
    path = directory / f"{failure.first_mutation}-{digest}.gguf"
    path.write_bytes(failure.data)
    return path


FORMAT = Format(
    bases=base_files,
    make_case=make_case,
    write_case=Path.write_bytes,
    encode=bytes,
    save_regression=save_regression,
    suffix=".gguf",
)


def main(argv: list[str] | None = None) -> int:
    return fuzz_driver.main(
        FORMAT,
        argv,
        description=__doc__.split("\n\n")[0],
        regressions=REGRESSIONS,
        tmp_prefix="smolgen-fuzz-",
    )


if __name__ == "__main__":
    sys.exit(main())
