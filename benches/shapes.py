"""GGUF files of SmolLM2's larger shapes, from random weights, for benchmarks only.

SmolLM2-360M and 1.7B are not reachable here, so their speed is measured on files of their exact
shapes: weights drawn from N(0, 0.02) (norms 1), the tokenizer and chat template copied from a
real SmolLM2 GGUF, written in F16 with the ``gguf`` package. Each of ``--types`` is then
written from it by ``smolgen quantize``, or by llama.cpp's ``llama-quantize`` when it is given
(the two write the same file); ``benches/formats.py --files`` measures them.
Text generated from these files is noise; speed, memory and load time are what they are for.

    python benches/shapes.py --tokenizer-from SmolLM2-135M-Instruct.Q4_1.gguf --size 1.7b \\
        --llama-quantize build/bin/llama-quantize --types Q4_K_M,Q8_0 --out-dir shapes/
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    rope_theta: float
    vocab: int = 49152
    context: int = 8192


# From the models' config.json on the Hugging Face Hub (tied embeddings, head_dim 64).
SHAPES = {
    "135m": Shape(576, 30, 9, 3, 1536, 100000.0),
    "360m": Shape(960, 32, 15, 5, 2560, 100000.0),
    "1.7b": Shape(2048, 24, 32, 32, 8192, 130000.0),
}


def write_random_gguf(tokenizer_from: Path, shape: Shape, dst: Path, seed: int = 0) -> Path:
    """A llama GGUF of ``shape`` in F16 (norms F32), the tokenizer of ``tokenizer_from``."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(tokenizer_from))
    writer = gguf.GGUFWriter(str(dst), "llama")
    for name, f in reader.fields.items():
        if name.startswith("tokenizer."):
            vtype = f.types[0]
            sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, f.contents(), vtype, sub)
    writer.add_name(f"random weights of SmolLM2's {shape.hidden}-wide shape")
    writer.add_block_count(shape.layers)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_vocab_size(shape.vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    rng = np.random.default_rng(seed)
    kv = shape.kv_heads * (shape.hidden // shape.heads)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(shape.hidden, dtype=np.float32)

    writer.add_tensor("token_embd.weight", matrix(shape.vocab, shape.hidden))
    for i in range(shape.layers):
        blk = f"blk.{i}."
        writer.add_tensor(blk + "attn_norm.weight", norm())
        writer.add_tensor(blk + "attn_q.weight", matrix(shape.hidden, shape.hidden))
        writer.add_tensor(blk + "attn_k.weight", matrix(kv, shape.hidden))
        writer.add_tensor(blk + "attn_v.weight", matrix(kv, shape.hidden))
        writer.add_tensor(blk + "attn_output.weight", matrix(shape.hidden, shape.hidden))
        writer.add_tensor(blk + "ffn_norm.weight", norm())
        writer.add_tensor(blk + "ffn_gate.weight", matrix(shape.ffn, shape.hidden))
        writer.add_tensor(blk + "ffn_up.weight", matrix(shape.ffn, shape.hidden))
        writer.add_tensor(blk + "ffn_down.weight", matrix(shape.hidden, shape.ffn))
    writer.add_tensor("output_norm.weight", norm())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer-from", type=Path, required=True, help="a SmolLM2 GGUF")
    p.add_argument("--size", choices=sorted(SHAPES), required=True)
    p.add_argument(
        "--llama-quantize", type=Path, help="quantize with llama.cpp's llama-quantize instead"
    )
    p.add_argument("--types", default="", help="comma-separated, e.g. Q4_K_M,Q8_0")
    p.add_argument("--out-dir", type=Path, default=Path("shapes"))
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    f16 = args.out_dir / f"smollm2-{args.size}-random.F16.gguf"
    if not f16.exists():
        write_random_gguf(args.tokenizer_from, SHAPES[args.size], f16)
    print(f16)
    for t in filter(None, args.types.split(",")):
        dst = args.out_dir / f"smollm2-{args.size}-random.{t}.gguf"
        if dst.exists():
            pass
        elif args.llama_quantize is None:
            import smolgen

            smolgen.quantize(f16, dst, t)
        else:
            cmd = [str(args.llama_quantize), str(f16), str(dst), t]
            subprocess.run(cmd, check=True, capture_output=True)
        print(dst)


if __name__ == "__main__":
    main()
