"""A readable NumPy Llama forward pass: the oracle the Rust model is tested against.

Everything in float64, no cache, no tricks: embed, then per layer
``x += o(attention(rope(q(n(x))), rope(k(n(x))), v(n(x))))`` and
``x += down(silu(gate(n(x))) * up(n(x)))``, then the final norm and the LM head.
Weights use llama.cpp's names (``blk.0.attn_q.weight``, ...), each matrix ``[out, in]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LlamaConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    context_length: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10_000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x: np.ndarray, positions: np.ndarray, theta: float, interleaved: bool) -> np.ndarray:
    """Rotary embedding of ``x`` ``[t, heads, head_dim]``. Pairs are (2i, 2i+1) when
    ``interleaved`` (GGUF's permuted Q/K rows), else (i, i + head_dim/2) (Hugging Face)."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)  # [d/2]
    angles = positions[:, None] * inv_freq[None, :]  # [t, d/2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., : d // 2], x[..., d // 2 :]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if interleaved:
        out[..., 0::2], out[..., 1::2] = ra, rb
    else:
        out[..., : d // 2], out[..., d // 2 :] = ra, rb
    return out


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, rep: int) -> np.ndarray:
    """The same attention as :func:`forward`'s with the weights kept, by matrix products per
    head over blocks of queries, so that long prompts cost ``t x block`` memory, not
    ``heads x t x t``. ``q`` is ``[t, heads, d]``, ``k`` and ``v`` ``[t, kv_heads, d]``."""
    t, heads, d = q.shape
    y = np.empty_like(q)
    block = 512
    for h in range(heads):
        kh, vh = k[:, h // rep], v[:, h // rep]
        for start in range(0, t, block):
            stop = min(start + block, t)
            s = q[start:stop, h] @ kh[:stop].T / np.sqrt(d)  # [block, keys]
            s[np.arange(stop - start)[:, None] + start < np.arange(stop)[None, :]] = -np.inf
            y[start:stop, h] = softmax(s) @ vh[:stop]
    return y.reshape(t, -1)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(
    w: dict[str, np.ndarray],
    cfg: LlamaConfig,
    ids: list[int],
    *,
    interleaved: bool,
    attention: list[np.ndarray] | None = None,
    kv_dtype: type | None = None,
    last: int | None = None,
) -> np.ndarray:
    """Logits ``[len(ids), vocab]`` for every position, or for the ``last`` ones only. Appends
    each layer's attention weights ``[heads, t, t]`` to ``attention`` when given. With
    ``kv_dtype`` (``np.float16``), keys and values are rounded to it, as a KV cache in that
    format holds them."""
    t, hd = len(ids), cfg.head_dim
    rep = cfg.num_heads // cfg.num_kv_heads
    positions = np.arange(t, dtype=np.float64)
    # The dense [t, t] mask only where the weights are kept: a long prompt's attention goes by
    # blocks of queries (causal_attention) and never needs it.
    causal = np.triu(np.full((t, t), -np.inf), k=1) if attention is not None else None
    x = w["token_embd.weight"][ids].astype(np.float64)  # [t, hidden]
    for i in range(cfg.num_layers):
        p = f"blk.{i}."
        h = rms_norm(x, w[p + "attn_norm.weight"], cfg.rms_norm_eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(t, cfg.num_heads, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(t, cfg.num_kv_heads, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t, cfg.num_kv_heads, hd)
        q = rope(q, positions, cfg.rope_theta, interleaved)
        k = rope(k, positions, cfg.rope_theta, interleaved)
        if kv_dtype is not None:
            k, v = (a.astype(np.float32).astype(kv_dtype).astype(np.float64) for a in (k, v))
        if attention is not None:
            kr, vr = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)  # per query head
            weights = softmax(np.einsum("qhd,khd->hqk", q, kr) / np.sqrt(hd) + causal)
            attention.append(weights)
            y = np.einsum("hqk,khd->qhd", weights, vr).reshape(t, -1)
        else:
            y = causal_attention(q, k, v, rep)
        x = x + y @ w[p + "attn_output.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], cfg.rms_norm_eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    if last is not None:
        x = x[-last:]
    x = rms_norm(x, w["output_norm.weight"], cfg.rms_norm_eps)
    head = w.get("output.weight", w["token_embd.weight"])  # tied embeddings
    return x @ head.T


def kv_dtype_of(model) -> type | None:
    """The ``kv_dtype`` with which :func:`forward` holds keys and values as ``model``'s cache
    does."""
    return np.float16 if model.info["kv_cache_format"] == "f16" else None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


def load_gguf_weights(path: str) -> tuple[dict[str, np.ndarray], LlamaConfig]:
    """Dequantized float32 weights and the config of a Llama GGUF, read with llama.cpp's own
    Python package (``gguf``): an independent reader and dequantizer."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)

    def field(key: str):
        f = reader.fields[key]
        return f.parts[f.data[0]][0]

    weights = {
        t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
            tuple(int(d) for d in reversed(t.shape))
        )
        for t in reader.tensors
    }
    cfg = LlamaConfig(
        hidden_size=int(field("llama.embedding_length")),
        intermediate_size=int(field("llama.feed_forward_length")),
        num_layers=int(field("llama.block_count")),
        num_heads=int(field("llama.attention.head_count")),
        num_kv_heads=int(field("llama.attention.head_count_kv")),
        vocab_size=weights["token_embd.weight"].shape[0],
        context_length=int(field("llama.context_length")),
        rms_norm_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field("llama.rope.freq_base")),
    )
    return weights, cfg
