"""Numerical closeness of smolgen and of llama.cpp to an exact float64 forward pass over the
same weights: the criterion issue #14 holds every type to (smolgen's KL at most 1.25x
llama.cpp's own on the same file).

For every GGUF given, the weights are dequantized by the ``gguf`` package (an independent
reader) and run through the NumPy reference forward pass of ``tests/`` in float64. The text
(``benches/data/held_out.txt``, written for this) is tokenized and cut into chunks of ``--ctx``
tokens; every engine reads the same chunks from an empty cache, teacher-forced, and is judged at
every position: mean KL(exact || engine), and how often its top token is the exact pass's.
llama.cpp's logits come from ``llama_logits`` (``benches/llama_logits.cpp``, built against
llama.cpp's libraries: see the README), in float32 as llama.cpp computes them; smolgen's from
``Model.logits``, in a separate process per engine (the engine is chosen once per process).

    python benches/fidelity.py formats/*.gguf --llama-logits PATH [--candle] [--json]

Long prompts: ``--ctx 6000 --last 256`` reads one chunk of 6,000 tokens and judges its last
256 positions, where attention spans the whole prompt. The held-out text is shorter than that
and is repeated to fill it, which lets a model copy from earlier in the prompt; ``--text FILE``
(any long English text, e.g. a licence) reads that instead. ``--kv-f32`` also measures smolgen
with its f32 KV cache next to the default f16 one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
TEXT = HERE / "data" / "held_out.txt"

LOGITS = (
    "import sys, numpy as np, smolgen\n"
    "m = smolgen.load(sys.argv[1], threads=2)\n"
    "chunks, last = np.load(sys.argv[3]), int(sys.argv[4])\n"
    "rows = [m.logits([int(t) for t in c], 'all')[-last:] for c in chunks]\n"
    "np.save(sys.argv[2], np.stack(rows))\n"
)
#: Engines measured in a process of their own, and the environment that selects them.
ENGINES = {
    "smolgen": {"SMOLGEN_ENGINE": "auto"},
    "smolgen-f32kv": {"SMOLGEN_ENGINE": "auto", "SMOLGEN_KV_CACHE": "f32"},
    "candle": {"SMOLGEN_ENGINE": "candle"},
}


def llama_logprobs(
    binary: str, path: Path, chunks: np.ndarray, last: int, work: Path
) -> np.ndarray:
    """llama.cpp's log-probabilities ``[chunks, last, vocab]`` for the same chunks."""
    chunks.astype("<i4").tofile(work / "chunks.i32")
    ctx = chunks.shape[1]
    out = work / "out.f32"
    subprocess.run(
        [binary, str(path), str(work / "chunks.i32"), str(ctx), str(out), "2", str(last)],
        capture_output=True,
        check=True,
    )
    logits = np.fromfile(out, "<f4").reshape(chunks.shape[0], last, -1)
    return log_softmax(logits.astype(np.float64))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def smolgen_logprobs(
    path: Path, chunks: np.ndarray, last: int, engine: str, work: Path
) -> np.ndarray:
    np.save(work / "chunks.npy", chunks)
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOGITS,
            str(path),
            str(work / "logits.npy"),
            str(work / "chunks.npy"),
            str(last),
        ],
        env={**os.environ, **ENGINES[engine]},
        check=True,
    )
    return log_softmax(np.load(work / "logits.npy").astype(np.float64))


def closeness(
    path: Path,
    ctx: int,
    last: int | None,
    llama_logits: str | None,
    engines: list[str],
    text: Path = TEXT,
) -> dict:
    import smolgen
    from reference_llama import forward, load_gguf_weights

    ids = smolgen.Tokenizer.load(path).encode(text.read_text())
    text_tokens = len(ids)
    if len(ids) < ctx:  # a prompt longer than the text: the text repeated to fill it
        ids = (ids * (ctx // len(ids) + 1))[:ctx]
    n = len(ids) // ctx
    chunks = np.array(ids[: n * ctx], np.int32).reshape(n, ctx)
    last = last or ctx
    found: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if llama_logits:
            found["llama.cpp"] = llama_logprobs(llama_logits, path, chunks, last, work)
        for engine in engines:
            found[engine] = smolgen_logprobs(path, chunks, last, engine, work)

    weights, cfg = load_gguf_weights(str(path))
    exact = np.stack(
        [
            log_softmax(forward(weights, cfg, [int(t) for t in c], interleaved=True, last=last))
            for c in chunks
        ]
    )
    p = np.exp(exact)
    row: dict = {
        "file": path.name,
        "text": text.name,
        "text_tokens": text_tokens,
        "positions": int(exact.shape[0] * exact.shape[1]),
    }
    for name, lp in found.items():
        row[f"kl_{name}"] = float((p * (exact - lp)).sum(-1).mean())
        row[f"top1_{name}"] = float((exact.argmax(-1) == lp.argmax(-1)).mean())
    if "llama.cpp" in found:
        row["kl_ratio"] = row["kl_smolgen"] / row["kl_llama.cpp"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--llama-logits", default=None, help="the llama_logits binary (see the README)")
    p.add_argument("--candle", action="store_true", help="also measure the candle engine")
    p.add_argument("--ctx", type=int, default=128, help="tokens per chunk (default: 128)")
    p.add_argument("--last", type=int, default=None, help="judge only each chunk's last positions")
    p.add_argument(
        "--kv-f32", action="store_true", help="also measure smolgen with its f32 KV cache"
    )
    p.add_argument(
        "--text",
        type=Path,
        default=TEXT,
        help="the text to read (default: benches/data/held_out.txt)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    engines = (
        ["smolgen"]
        + (["smolgen-f32kv"] if args.kv_f32 else [])
        + (["candle"] if args.candle else [])
    )
    rows = []
    for f in args.files:
        row = closeness(f, args.ctx, args.last, args.llama_logits, engines, args.text)
        rows.append(row)
        if not args.json:
            print(json.dumps(row), file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    names = [n for n in ("llama.cpp", *engines) if f"kl_{n}" in rows[0]]
    print("| file | positions | " + " | ".join(f"KL {n}" for n in names), end="")
    print(" | smolgen / llama.cpp |" if "llama.cpp" in names else " |", end="")
    print(" " + " | ".join(f"top-1 {n}" for n in names) + " |")
    print("|---" * (2 + 2 * len(names) + ("llama.cpp" in names)) + "|")
    for r in rows:
        cells = [r["file"], str(r["positions"])] + [f"{r[f'kl_{n}']:.3g}" for n in names]
        if "llama.cpp" in names:
            cells.append(f"{r['kl_ratio']:.2f}x")
        cells += [f"{r[f'top1_{n}']:.1%}" for n in names]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
