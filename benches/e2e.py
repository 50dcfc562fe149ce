"""End-to-end speed of smolgen, side by side with llama.cpp on the same GGUF file.

Both engines get the same deterministic prompt of token ids (real English text, repeated,
tokenized with smolgen's tokenizer and cut to ``--prompt-tokens``, from
:func:`smolgen.bench.prompt_ids`), decode greedily with the end-of-generation tokens biased away
so that both always produce exactly ``--gen-tokens`` tokens (the bias of
:func:`smolgen.bench.no_stop_bias`, as :func:`smolgen.bench.fixed_length_decode` applies it),
and run with the same thread count. After one warm-up run each, the engines run
alternately ``--repeats`` times and the median of each number is reported:

* prefill tok/s: prompt tokens / seconds of the batched forward pass over the prompt;
* TTFT ms: from the start of the request to the first sampled token;
* decode tok/s: (generated tokens - 1) / seconds spent after the first token, one forward pass
  plus a greedy pick per token;
* decode GB/s: weight bytes x decode tok/s, an estimate of the memory traffic of decoding
  (each decoded token reads every weight once);
* ratio: smolgen's number / llama.cpp's (above 1: smolgen is faster).

llama.cpp is measured through ``llama-cpp-python`` when it is installed; without it smolgen's
numbers are printed alone. smolgen's own kernels get ``--threads`` when the model is loaded
(``smolgen.load(..., threads=N)``); candle's fallback path sizes its pool from
``RAYON_NUM_THREADS`` at first use, so this script also sets that before it imports smolgen.
smolgen runs with its prefix cache off, so every run prefills the whole prompt.

    python benches/e2e.py --threads 2 --repeats 3 [--json] [--plot e2e.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

EDGE_STEPS = 16  # steps averaged for the decode speed at the start and at the end of a run
DISTURBED = 0.15  # cores used by others (or stolen) during a run above which we warn
LLAMA_CPP_CONTEXT = 2048  # context window llama.cpp allocates: prompt + decoded tokens must fit


@dataclass
class Run:
    """One request: the prompt prefilled, then ``len(token_ids)`` tokens decoded."""

    engine: str
    prompt_tokens: int
    prefill_s: float
    ttft_s: float
    decode_steps_s: list[float]
    token_ids: list[int] = field(repr=False)
    cpu_util: float = 0.0  # this process's CPU seconds / wall seconds over the request
    others_util: float | None = None  # other processes' CPU seconds / wall seconds (Linux)
    steal_util: float | None = None  # CPU time the hypervisor took / wall seconds (Linux)

    @property
    def decode_s(self) -> float:
        return sum(self.decode_steps_s)

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s

    @property
    def decode_tps(self) -> float:
        return len(self.decode_steps_s) / self.decode_s

    def edge_tps(self, last: bool) -> float:
        """Decode tok/s over the first (or last) ``EDGE_STEPS`` steps."""
        steps = self.decode_steps_s[-EDGE_STEPS:] if last else self.decode_steps_s[:EDGE_STEPS]
        return len(steps) / sum(steps)

    def summary(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": len(self.token_ids),
            "prefill_s": self.prefill_s,
            "ttft_s": self.ttft_s,
            "decode_s": self.decode_s,
            "prefill_tokens_per_s": self.prefill_tps,
            "decode_tokens_per_s": self.decode_tps,
            "decode_first_steps_tokens_per_s": self.edge_tps(last=False),
            "decode_last_steps_tokens_per_s": self.edge_tps(last=True),
            "cpu_util": self.cpu_util,
            "others_util": self.others_util,
            "steal_util": self.steal_util,
        }


class Engine(Protocol):
    name: str
    version: str

    def run(self, prompt: list[int], gen_tokens: int) -> Run: ...


class SmolgenEngine:
    """smolgen's own generation loop, through :func:`smolgen.bench.fixed_length_decode` with
    the prefix cache off (the timings it reports are used as they are)."""

    name = "smolgen"

    def __init__(self, model: Any) -> None:
        import smolgen

        self.version = smolgen.__version__
        self.model = model

    def run(self, prompt: list[int], gen_tokens: int) -> Run:
        from smolgen.bench import fixed_length_decode

        c = fixed_length_decode(self.model, prompt, gen_tokens, prefix_cache=False)
        t = c.timings
        return Run(
            self.name,
            c.usage.prompt_tokens,
            t.prefill_s,
            t.ttft_s,
            list(t.decode_steps_s),
            list(c.token_ids),
        )


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python: ``eval`` for the forward passes, greedy pick on
    the last row of logits with the same logit bias as smolgen (``bias``: token id -> bias,
    from :func:`smolgen.bench.no_stop_bias`)."""

    name = "llama.cpp"

    def __init__(self, llama_cpp: Any, path: str, threads: int, bias: dict[int, float]) -> None:
        import numpy as np

        self.np = np
        self.lib = llama_cpp
        self.version = llama_cpp.__version__
        self.llm = llama_cpp.Llama(
            model_path=path,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=LLAMA_CPP_CONTEXT,
            n_batch=512,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        self.bias_ids = np.array(list(bias), dtype=np.int64)
        self.bias_values = np.array(list(bias.values()), dtype=np.float32)

    def _greedy(self) -> int:
        ptr = self.lib.llama_get_logits_ith(self.llm.ctx, -1)  # the last evaluated position
        logits = self.np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        logits[self.bias_ids] += self.bias_values
        return int(logits.argmax())

    def run(self, prompt: list[int], gen_tokens: int) -> Run:
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        token = self._greedy()
        t2 = time.perf_counter()
        out = [token]
        steps: list[float] = []
        while len(out) < gen_tokens:
            s = time.perf_counter()
            llm.eval([token])
            token = self._greedy()
            steps.append(time.perf_counter() - s)
            out.append(token)
        return Run(self.name, len(prompt), t1 - t0, t2 - t0, steps, out)


def system_cpu_s() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat (Linux only)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def measured_run(engine: Engine, prompt: list[int], gen_tokens: int) -> Run:
    """``engine.run`` with the CPU use around it recorded: this process's, the other
    processes' and the hypervisor's (steal). A run during which others used a noticeable part
    of a core shared the machine, and its numbers are low."""
    sys0, c0, w0 = system_cpu_s(), time.process_time(), time.perf_counter()
    r = engine.run(prompt, gen_tokens)
    wall = time.perf_counter() - w0
    own = time.process_time() - c0
    sys1 = system_cpu_s()
    r.cpu_util = own / wall
    if sys0 is not None and sys1 is not None:
        r.others_util = max(0.0, (sys1[0] - sys0[0] - own) / wall)
        r.steal_util = (sys1[1] - sys0[1]) / wall
    return r


def fmt_opt(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def medians(runs: list[Run]) -> dict[str, Any]:
    keys = [
        "prefill_tokens_per_s",
        "ttft_s",
        "decode_tokens_per_s",
        "decode_first_steps_tokens_per_s",
        "decode_last_steps_tokens_per_s",
    ]
    sums = [r.summary() for r in runs]
    out: dict[str, Any] = {k: statistics.median(s[k] for s in sums) for k in keys}
    out["cpu_util_min"] = min(s["cpu_util"] for s in sums)
    for k in ("others_util", "steal_util"):
        values = [s[k] for s in sums if s[k] is not None]
        out[k + "_max"] = max(values) if values else None
    for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        values = [s[k] for s in sums]
        out[k.replace("tokens_per_s", "spread")] = (max(values) - min(values)) / out[k]
    return out


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where two greedy outputs differ (None: identical)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def format_table(report: dict[str, Any]) -> str:
    env, cfg, res = report["environment"], report["config"], report["results"]
    lines = [
        f"smolgen end-to-end benchmark  {env['date']}",
        f"CPU: {env['cpu']} ({env['cpus_available']} available), threads: {cfg['threads']}, "
        f"smolgen engine: {env['smolgen_engine']}",
        f"versions: smolgen {env['smolgen']}, llama-cpp-python {env['llama_cpp'] or '-'}, "
        f"Python {env['python']}, {env['platform']}",
        f"model: {cfg['model']} ({env['weight_bytes'] / 1e6:.1f} MB of weights)",
        f"prompt {cfg['prompt_tokens']} tokens, decode {cfg['gen_tokens']} tokens, greedy, "
        f"median of {cfg['repeats']} alternating runs after a warm-up; "
        f"load average before {env['load_before']}, after {env['load_after']}",
        "",
    ]
    head = [
        "engine",
        "prefill tok/s",
        "TTFT ms",
        "decode tok/s",
        f"decode first/last {EDGE_STEPS}",
        "decode GB/s",
        "prefill ratio",
        "decode ratio",
    ]
    rows = [head]
    for name, m in res.items():
        ratio = report["ratio_vs_llama_cpp"] if name == "smolgen" else None
        rows.append(
            [
                name,
                f"{m['prefill_tokens_per_s']:.1f}",
                f"{m['ttft_s'] * 1e3:.1f}",
                f"{m['decode_tokens_per_s']:.1f}",
                f"{m['decode_first_steps_tokens_per_s']:.1f} / "
                f"{m['decode_last_steps_tokens_per_s']:.1f}",
                f"{m['decode_gb_per_s']:.2f}",
                f"{ratio['prefill']:.2f}x" if ratio else ("1.00x" if len(res) > 1 else "-"),
                f"{ratio['decode']:.2f}x" if ratio else ("1.00x" if len(res) > 1 else "-"),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for name, m in res.items():
        lines.append(
            f"{name}: spread (max-min)/median over repeats: prefill "
            f"{m['prefill_spread'] * 100:.1f}%, decode {m['decode_spread'] * 100:.1f}%; "
            f"cores used: this process >= {m['cpu_util_min']:.2f}, others <= "
            f"{fmt_opt(m['others_util_max'])}, steal <= {fmt_opt(m['steal_util_max'])}"
        )
    busiest = max(
        (m["others_util_max"] or 0.0) + (m["steal_util_max"] or 0.0) for m in res.values()
    )
    if busiest > DISTURBED:
        lines.append(
            f"WARNING: other work took up to {busiest:.2f} cores during a run: the numbers are "
            "low and noisy, re-run on a quiet machine"
        )
    if report["llama_cpp_missing"]:
        lines.append("llama.cpp: not found (pip install llama-cpp-python to compare); no ratio.")
    else:
        div = report["greedy_outputs_first_difference"]
        lines.append(
            "greedy outputs: identical"
            if div is None
            else f"greedy outputs: first differ at generated token {div}"
        )
    lines.append(
        "decode GB/s = weight bytes x decode tok/s; ratio = smolgen / llama.cpp (>1: faster)"
    )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot: matplotlib is not installed, {path} not written", file=sys.stderr)
        return
    res = report["results"]
    names = list(res)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, title in (
        (axes[0], "prefill_tokens_per_s", f"prefill ({report['config']['prompt_tokens']} tok)"),
        (axes[1], "decode_tokens_per_s", f"decode ({report['config']['gen_tokens']} tok)"),
    ):
        values = [res[n][key] for n in names]
        bars = ax.bar(names, values, color=["tab:blue", "tab:gray"][: len(names)])
        ax.bar_label(bars, fmt="%.0f")
        ax.set_title(title)
        ax.set_ylabel("tokens/s")
    fig.suptitle(
        f"{report['environment']['cpu']}, {report['config']['threads']} thread(s)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="GGUF path or alias")
    p.add_argument("--threads", type=int, default=2, help="threads for both engines")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print a JSON report instead")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the medians (matplotlib)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.prompt_tokens < 1 or args.gen_tokens < 2:
        p.error("threads, repeats and prompt-tokens must be >= 1, gen-tokens >= 2")
    if args.prompt_tokens + args.gen_tokens > LLAMA_CPP_CONTEXT:
        p.error(f"prompt-tokens + gen-tokens must be at most {LLAMA_CPP_CONTEXT}")

    # Before smolgen is imported: candle's thread pool (the fallback path) is sized once, at
    # first use. smolgen's own kernels take the thread count at load.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import smolgen
    from smolgen.bench import available_cpus, cpu_name, no_stop_bias, prompt_ids

    load_before = load_avg()
    model = smolgen.load(args.model, threads=args.threads, prefix_cache_bytes=0)
    info = model.info
    bias = no_stop_bias(model)
    prompt = prompt_ids(model, args.prompt_tokens)

    engines: list[Engine] = [SmolgenEngine(model)]
    llama_missing = True
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None  # type: ignore[assignment]
    if llama_cpp is not None and info.get("format") == "gguf":
        engines.append(LlamaCppEngine(llama_cpp, str(info["path"]), args.threads, bias))
        llama_missing = False
    elif llama_cpp is not None:
        print("llama.cpp: skipped, the model is not a GGUF file", file=sys.stderr)

    for e in engines:  # warm-up: page in the weights, size the buffers, start the threads
        e.run(prompt, args.gen_tokens)
    runs: dict[str, list[Run]] = {e.name: [] for e in engines}
    for i in range(args.repeats):
        for e in engines:
            time.sleep(0.5)  # let the other engine's worker threads go idle
            r = measured_run(e, prompt, args.gen_tokens)
            runs[e.name].append(r)
            if not args.json:
                print(
                    f"  run {i + 1}/{args.repeats} {e.name:9s} prefill {r.prefill_tps:8.1f} "
                    f"tok/s  decode {r.decode_tps:7.1f} tok/s  cores: this {r.cpu_util:.2f}, "
                    f"others {fmt_opt(r.others_util)}, steal {fmt_opt(r.steal_util)}",
                    file=sys.stderr,
                )

    results: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        m = medians(rs)
        m["decode_gb_per_s"] = info["weight_bytes"] * m["decode_tokens_per_s"] / 1e9
        results[name] = m
    ratio = None
    if not llama_missing:
        s, ll = results["smolgen"], results["llama.cpp"]
        ratio = {
            "prefill": s["prefill_tokens_per_s"] / ll["prefill_tokens_per_s"],
            "decode": s["decode_tokens_per_s"] / ll["decode_tokens_per_s"],
            "ttft": s["ttft_s"] / ll["ttft_s"],
        }
    report: dict[str, Any] = {
        "config": {
            "model": str(info["path"]),
            "threads": args.threads,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "repeats": args.repeats,
        },
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_name(),
            "cpus_available": available_cpus(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "smolgen": smolgen.__version__,
            "smolgen_engine": info.get("engine"),
            "smolgen_threads": info.get("threads"),
            "llama_cpp": None if llama_missing else engines[1].version,
            "weight_bytes": info["weight_bytes"],
            "load_before": load_before,
            "load_after": load_avg(),
        },
        "results": results,
        "ratio_vs_llama_cpp": ratio,
        "llama_cpp_missing": llama_missing,
        "greedy_outputs_first_difference": None
        if llama_missing
        else first_divergence(runs["smolgen"][0].token_ids, runs["llama.cpp"][0].token_ids),
        "runs": {name: [r.summary() for r in rs] for name, rs in runs.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
