"""A tiny random Llama, written by the tests themselves in both formats smolgen reads.

The same weights go into a Hugging Face directory (config.json, safetensors, tokenizer.json) and
into GGUF files (with llama.cpp's Q/K row permutation and its tokenizer metadata), so the tests
can hold both loaders and the forward pass to the NumPy reference in ``reference_llama.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from reference_llama import LlamaConfig

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or")]

# Rows of 256 values, the K-quants' superblock.
K_CONFIG = LlamaConfig(
    hidden_size=256,
    intermediate_size=512,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    vocab_size=256 + len(MERGES) + len(SPECIAL_TOKENS),
    context_length=96,
    rms_norm_eps=1e-5,
    rope_theta=10_000.0,
)

CONFIG = LlamaConfig(
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    vocab_size=256 + len(MERGES) + len(SPECIAL_TOKENS),
    context_length=96,
    rms_norm_eps=1e-5,
    rope_theta=10_000.0,
)


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary() -> list[str]:
    """Special tokens first (ids 0, 1, 2 as in SmolLM2), then the 256 bytes, then the merges."""
    return SPECIAL_TOKENS + byte_level_alphabet() + ["".join(m) for m in MERGES]


def random_weights(seed: int = 0, cfg: LlamaConfig = CONFIG) -> dict[str, np.ndarray]:
    """Hugging Face layout (unpermuted Q/K), llama.cpp names, float32, tied embeddings."""
    rng = np.random.default_rng(seed)
    h, hd = cfg.hidden_size, cfg.head_dim

    def mat(out: int, inp: int) -> np.ndarray:
        return (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    w = {"token_embd.weight": rng.standard_normal((cfg.vocab_size, h)).astype(np.float32)}
    for i in range(cfg.num_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm()
        w[p + "attn_q.weight"] = mat(cfg.num_heads * hd, h)
        w[p + "attn_k.weight"] = mat(cfg.num_kv_heads * hd, h)
        w[p + "attn_v.weight"] = mat(cfg.num_kv_heads * hd, h)
        w[p + "attn_output.weight"] = mat(h, cfg.num_heads * hd)
        w[p + "ffn_norm.weight"] = norm()
        w[p + "ffn_gate.weight"] = mat(cfg.intermediate_size, h)
        w[p + "ffn_up.weight"] = mat(cfg.intermediate_size, h)
        w[p + "ffn_down.weight"] = mat(h, cfg.intermediate_size)
    w["output_norm.weight"] = norm()
    return w


def permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter: reorder each head's rows from half-split to interleaved pairs."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_layout(w: dict[str, np.ndarray], cfg: LlamaConfig = CONFIG) -> dict[str, np.ndarray]:
    out = dict(w)
    for i in range(cfg.num_layers):
        p = f"blk.{i}."
        out[p + "attn_q.weight"] = permute_for_gguf(w[p + "attn_q.weight"], cfg.num_heads)
        out[p + "attn_k.weight"] = permute_for_gguf(w[p + "attn_k.weight"], cfg.num_kv_heads)
    return out


HF_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name: str) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, kind, _ = name.split(".")
    return f"model.layers.{layer}.{HF_NAMES[kind]}.weight"


def bf16_rounded(x: np.ndarray) -> np.ndarray:
    """`x` rounded to bfloat16 (nearest, ties to even), as the uint16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_values(x: np.ndarray) -> np.ndarray:
    """`x` rounded to bfloat16, as float32 values."""
    return (bf16_rounded(x).astype(np.uint32) << 16).view(np.float32)


def save_bf16_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    """A safetensors file of bfloat16 tensors (NumPy has no bfloat16 for the library to save)."""
    header, blobs, at = {}, [], 0
    for name in sorted(tensors):
        blob = bf16_rounded(tensors[name]).tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(tensors[name].shape),
            "data_offsets": [at, at + len(blob)],
        }
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def write_hf_dir(
    directory: Path,
    w: dict[str, np.ndarray],
    cfg: LlamaConfig = CONFIG,
    shards: int = 1,
    dtype: str = "float32",
) -> Path:
    """config.json, tokenizer files and (optionally sharded) safetensors, in `dtype` (float32,
    float16 or bfloat16, as Hugging Face publishes SmolLM2)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": True,
        "torch_dtype": dtype,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    names = sorted(w)
    for s in range(shards):
        part = {hf_name(n): w[n] for n in names[s::shards]}
        path = directory / f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        if dtype == "bfloat16":
            save_bf16_safetensors(part, path)
        else:
            save_file({k: v.astype(dtype) for k, v in part.items()}, str(path))
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "add_bos_token": False})
    )
    return directory


def tokenizer_json() -> dict:
    vocab = vocabulary()
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, t in enumerate(SPECIAL_TOKENS)
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": True,
                },
            ],
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {t: i for i, t in enumerate(vocab)},
            "merges": [f"{a} {b}" for a, b in MERGES],
        },
    }


def quantized(value: np.ndarray, qtype: str) -> np.ndarray:
    """``value`` as ggml's bytes of ``qtype``, one row of bytes per row: by the ``gguf`` package
    where it quantizes that type, else by smolgen's own ggml quantization (the K-quants)."""
    import gguf

    quant = gguf.GGMLQuantizationType[qtype]
    try:
        return gguf.quants.quantize(value, quant)
    except NotImplementedError:
        from smolgen import _core

        rows = [
            np.frombuffer(_core.quantize(qtype, np.ascontiguousarray(row, np.float32)), np.uint8)
            for row in value
        ]
        return np.stack(rows)


def write_gguf(
    path: Path,
    w: dict[str, np.ndarray],
    cfg: LlamaConfig = CONFIG,
    qtype: str = "F32",
    *,
    architecture: str = "llama",
    qtypes: dict[str, str] | None = None,
) -> Path:
    """A GGUF of the same model: permuted Q/K, matrices stored as ``qtype`` (or as ``qtypes``
    names for a tensor whose name contains one of its keys: a mixed file such as Q4_K_M), norms
    in F32."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(cfg.num_layers)
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(vocabulary())
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    types = [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    types += [gguf.TokenType.NORMAL] * (cfg.vocab_size - len(SPECIAL_TOKENS))
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    for name, value in gguf_layout(w, cfg).items():
        this = next((t for part, t in (qtypes or {}).items() if part in name), qtype)
        quant = gguf.GGMLQuantizationType[this]
        if value.ndim == 1 or quant == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, value.astype(np.float32))
        else:
            data = quantized(value, this)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def dequantized_gguf_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights as stored in a GGUF (after quantization), read back with llama.cpp's reader."""
    from reference_llama import load_gguf_weights

    return load_gguf_weights(str(path))[0]
