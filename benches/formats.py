"""Every quantization type, smolgen beside llama.cpp's own ``llama-bench``, on the same files.

Two steps, both optional:

1. ``--make-from MODEL.gguf --llama-quantize PATH --types Q4_0,Q5_0,...`` writes the test files:
   the model's weights dequantized to an F32 GGUF (with the ``gguf`` package, metadata copied),
   then quantized to each type by llama.cpp's ``llama-quantize``, into ``--out-dir``. So every
   file holds the same model, as llama.cpp's tools would write it (Q4_K_M included, with its
   per-tensor mix and its fallbacks where a row is not a multiple of 256).
2. For each file (``--files``, or the ones just made), alternating, ``--repeats`` times each:
   ``smolgen bench FILE --json`` (prefill of 512 tokens, decode of 128, TTFT of a 16-token
   prompt, the resident memory the load added, the rate decode reads the weights at next to
   the machine's read bandwidth) and, with ``--llama-bench PATH``, ``llama-bench -p 512 -n
   128`` on the same thread count. Medians, and smolgen / llama.cpp ratios.

    python benches/formats.py --make-from model.Q4_1.gguf \\
        --llama-quantize build/bin/llama-quantize --llama-bench build/bin/llama-bench \\
        --types Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q4_K_M,Q6_K --out-dir formats/ --threads 2 --repeats 3

Build both tools from the llama.cpp sources inside the ``llama-cpp-python`` sdist (see
benches/README.md). Run it on a quiet machine: llama.cpp's spinning threads suffer more than
smolgen's from other load, which would flatter the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def dequantized_copy(src: Path, dst: Path) -> Path:
    """``src`` with every tensor in F32 (2-D ones dequantized), its metadata copied."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, f.contents(), vtype, sub)
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        writer.add_tensor(t.name, np.asarray(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def make_files(model: Path, quantize: Path, types: list[str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    f32 = out_dir / f"{model.stem}.F32.gguf"
    if not f32.exists():
        dequantized_copy(model, f32)
    files = []
    for t in types:
        dst = out_dir / f"{model.stem}.{t}.gguf"
        if not dst.exists():
            subprocess.run([str(quantize), str(f32), str(dst), t], check=True, capture_output=True)
        files.append(dst)
    return files


def smolgen_run(path: Path, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "smolgen",
            "bench",
            str(path),
            "--threads",
            str(threads),
            "--json",
            "--no-bandwidth",
            "--batch",
            "1",
            "--repeats",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    r = json.loads(out.stdout)
    return {
        "engine": r["system"]["engine"],
        "prefill": r["prefill"]["tokens_per_s"],
        "decode": r["decode"]["tokens_per_s"],
        "ttft_ms": r["ttft"]["ttft_s"] * 1e3,
        "rss_mb": r["memory"]["model_rss_bytes"] / 1e6,
        "file_mb": r["model"]["file_bytes"] / 1e6,
        "read_gbps": r["bandwidth"]["weight_read_gb_per_s"],
    }


def llama_run(bench: Path, path: Path, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [
            str(bench),
            "-m",
            str(path),
            "-t",
            str(threads),
            "-p",
            "512",
            "-n",
            "128",
            "-r",
            "1",
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = json.loads(out.stdout)
    speed = {}
    for row in rows:
        key = "prefill" if row["n_prompt"] > 0 else "decode"
        speed[key] = float(row["avg_ts"])
    return speed


def machine_bandwidth(threads: int) -> float:
    """The machine's read bandwidth in GB/s on ``threads`` threads, as ``smolgen bench``
    measures it, in a fresh process (so nothing of a model is resident)."""
    code = f"from smolgen.bench import measure_bandwidth; print(measure_bandwidth({threads}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout)


def measure(files: list[Path], bench: Path | None, threads: int, repeats: int) -> list[dict]:
    # Measured before and after the files: the median of the two is each row's reference.
    before = machine_bandwidth(threads)
    table = []
    for path in files:
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        smolgen_run(path, threads)  # warm-up: page cache, repacking code paths
        if bench:
            llama_run(bench, path, threads)
        for _ in range(repeats):
            ours.append(smolgen_run(path, threads))
            if bench:
                theirs.append(llama_run(bench, path, threads))

        def med(runs: list[dict[str, Any]], key: str) -> float | None:
            return statistics.median(r[key] for r in runs) if runs else None

        row: dict[str, Any] = {
            "file": path.name,
            "engine": ours[0]["engine"],
            "file_mb": ours[0]["file_mb"],
            "rss_mb": med(ours, "rss_mb"),
            "ttft_ms": med(ours, "ttft_ms"),
            "read_gbps": med(ours, "read_gbps"),
        }
        for key in ("prefill", "decode"):
            row[key] = med(ours, key)
            row[f"llama_{key}"] = med(theirs, key)
            mine, peer = row[key], row[f"llama_{key}"]
            row[f"{key}_ratio"] = mine / peer if mine and peer else None
        table.append(row)
    machine = statistics.median([before, machine_bandwidth(threads)])
    for row in table:
        row["machine_gbps"] = machine
        row["read_share"] = row["read_gbps"] / machine if row["read_gbps"] else None
    return table


def markdown(table: list[dict]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    lines = [
        "| file | smolgen engine | prefill 512 tok/s, smolgen / llama.cpp | decode 128 tok/s, "
        "smolgen / llama.cpp | decode reads, GB/s (share of the machine's) "
        "| TTFT 16 (ms) | model RSS / file (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        share = 100 * r["read_share"] if r["read_share"] else None
        lines.append(
            f"| {r['file']} | {r['engine']} "
            f"| {num(r['prefill'], '.0f')} / {num(r['llama_prefill'], '.0f')} "
            f"({num(r['prefill_ratio'], '.2f')}x) "
            f"| {num(r['decode'], '.0f')} / {num(r['llama_decode'], '.0f')} "
            f"({num(r['decode_ratio'], '.2f')}x) "
            f"| {num(r['read_gbps'], '.1f')} ({num(share, '.0f')}% of {r['machine_gbps']:.1f}) "
            f"| {num(r['ttft_ms'], '.1f')} | {num(r['rss_mb'], '.0f')} / {r['file_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", nargs="*", type=Path, default=[])
    p.add_argument("--make-from", type=Path, help="a GGUF to requantize to every --types")
    p.add_argument("--llama-quantize", type=Path)
    p.add_argument("--types", default="Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q4_K_M,Q6_K")
    p.add_argument("--out-dir", type=Path, default=Path("formats"))
    p.add_argument("--llama-bench", type=Path, help="llama.cpp's llama-bench, for the ratios")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    args = p.parse_args(argv)
    files = list(args.files)
    if args.make_from:
        if not args.llama_quantize:
            p.error("--make-from needs --llama-quantize")
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        files += make_files(args.make_from, args.llama_quantize, types, args.out_dir)
    if not files:
        p.error("no files: give --files or --make-from")
    table = measure(files, args.llama_bench, args.threads, args.repeats)
    print(json.dumps(table, indent=1) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
