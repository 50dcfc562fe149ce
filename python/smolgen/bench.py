"""Throughput measured on this machine, for the cost model and for sizing a device.

Every generation here is greedy with the end-of-generation tokens biased away
(:func:`fixed_length_decode`), so each run does the same work, and runs with the prefix cache
off, so every prompt is computed in full. Decode tokens/s counts the tokens after the first
(the first one is prefill's), as llama.cpp and candle's examples report it.

:func:`run_bench` is ``smolgen bench``: it loads a model and measures load time, memory, time to
first token, prefill and decode speed, batched decode and the memory bandwidth decoding
achieves. The ``measure_*`` functions it calls each measure one of those on a loaded model.
``benches/e2e.py`` builds its prompts and its fixed-length runs from the same helpers.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import _core
from .errors import InternalError, InvalidArgumentError
from .model import Completion, Model, load, peak_rss_bytes, step_streams

_PARAGRAPH = (
    "The history of computing is a story of ever smaller machines doing ever more work. "
    "Early computers filled rooms and were programmed with switches and punched cards. "
)

#: Logit bias that keeps the end-of-generation tokens from ever being picked.
NO_STOP_BIAS = -100.0
#: Prompt length of the time-to-first-token, decode and batched-decode measurements.
SHORT_PROMPT_TOKENS = 16

#: ``progress(description, step, total)``: called by :func:`run_bench` before each step.
Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------
# Prompts and fixed-length runs
# --------------------------------------------------------------------------------------------


def prompt_ids(model: Model, n_tokens: int, offset: int = 0) -> list[int]:
    """A deterministic prompt of exactly ``n_tokens`` tokens of ordinary English (no special
    tokens). ``offset`` skips that many tokens first, so that different offsets give different
    prompts of the same length."""
    ids: list[int] = []
    while len(ids) < offset + n_tokens:
        ids += model.tokenize(_PARAGRAPH, special=False)
    return ids[offset : offset + n_tokens]


def no_stop_bias(model: Model) -> dict[int, float]:
    """The logit bias (:data:`NO_STOP_BIAS` on each end-of-generation token) that makes a
    generation run to ``max_tokens``."""
    return dict.fromkeys(sorted(set(model.tokenizer.end_of_generation_ids)), NO_STOP_BIAS)


def fixed_length_decode(
    model: Model, ids: list[int], gen_tokens: int, **options: Any
) -> Completion:
    """A greedy generation of exactly ``gen_tokens`` tokens: end-of-generation tokens are
    suppressed so that every run does the same work. ``options`` go to ``generate``
    (``prefix_cache=False`` for a full prefill every time). Returns the Completion."""
    c = model.generate(
        ids, max_tokens=gen_tokens, temperature=0, logit_bias=no_stop_bias(model), **options
    )
    if len(c.token_ids) != gen_tokens:
        raise InternalError(
            f"a fixed-length run generated {len(c.token_ids)} tokens, not {gen_tokens} "
            f"(finish_reason={c.finish_reason!r})"
        )
    return c


# --------------------------------------------------------------------------------------------
# The machine and the process
# --------------------------------------------------------------------------------------------


def resident_bytes() -> int | None:
    """This process's resident memory now (``VmRSS``, Linux only; ``None`` elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def model_file_bytes(path: str | os.PathLike[str]) -> int | None:
    """Size of a model on disk: the file, or a directory's files (not recursive)."""
    p = Path(path)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        return p.stat().st_size
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Measurements on a loaded model
# --------------------------------------------------------------------------------------------


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by nearest rank: one of the values, the
    definition ``Timings.decode_p95_s`` uses too."""
    result = _core.percentile(list(values), q)
    if result is None:
        raise InvalidArgumentError(f"no {q}th percentile of {len(values)} values")
    return result


def measure_ttft(
    model: Model, *, repeats: int = 3, prompt_tokens: int = SHORT_PROMPT_TOKENS
) -> dict[str, Any]:
    """Time to first token for a ``prompt_tokens``-token prompt, prefix cache off: the median
    of ``repeats`` requests of one token each (prefill plus the first greedy pick)."""
    ids = prompt_ids(model, prompt_tokens)
    runs = [
        fixed_length_decode(model, ids, 1, prefix_cache=False).timings.ttft_s
        for _ in range(repeats)
    ]
    return {"prompt_tokens": prompt_tokens, "ttft_s": statistics.median(runs), "runs_s": runs}


def measure_prefill(model: Model, *, prompt_tokens: int = 512, repeats: int = 3) -> dict[str, Any]:
    """Prefill speed: prompt tokens / seconds of the batched forward pass over a
    ``prompt_tokens``-token prompt, prefix cache off; the median of ``repeats`` runs."""
    ids = prompt_ids(model, prompt_tokens)
    runs = [
        fixed_length_decode(model, ids, 1, prefix_cache=False).timings.prefill_tokens_per_s
        for _ in range(repeats)
    ]
    return {
        "prompt_tokens": prompt_tokens,
        "tokens_per_s": statistics.median(runs),
        "runs_tokens_per_s": runs,
    }


def measure_decode(
    model: Model,
    *,
    gen_tokens: int = 128,
    repeats: int = 3,
    prompt_tokens: int = SHORT_PROMPT_TOKENS,
) -> dict[str, Any]:
    """Single-sequence decode speed: ``gen_tokens`` greedy tokens after a
    ``prompt_tokens``-token prompt, ``repeats`` times.

    ``tokens_per_s`` is the median over the runs of (generated tokens - 1) / decode seconds.
    The per-step durations of all runs are pooled for their 50th and 95th percentiles, given in
    milliseconds (``step_p50_ms``, ``step_p95_ms``) and as the tokens/s a step that long
    amounts to (``step_p50_tokens_per_s``, ``step_p95_tokens_per_s``: the slow tail).
    """
    if gen_tokens < 2:
        raise InvalidArgumentError(f"gen_tokens must be at least 2, got {gen_tokens}")
    ids = prompt_ids(model, prompt_tokens)
    rates: list[float] = []
    steps: list[float] = []
    for _ in range(repeats):
        t = fixed_length_decode(model, ids, gen_tokens, prefix_cache=False).timings
        rates.append(t.decode_tokens_per_s)
        steps.extend(t.decode_steps_s)
    p50, p95 = percentile(steps, 50), percentile(steps, 95)
    return {
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "tokens_per_s": statistics.median(rates),
        "runs_tokens_per_s": rates,
        "step_p50_ms": p50 * 1e3,
        "step_p95_ms": p95 * 1e3,
        "step_p50_tokens_per_s": 1 / p50 if p50 > 0 else math.inf,
        "step_p95_tokens_per_s": 1 / p95 if p95 > 0 else math.inf,
    }


def measure_context(
    model: Model, depths: Sequence[int], *, gen_tokens: int = 64, repeats: int = 3
) -> list[dict[str, Any]]:
    """Prefill and decode with long prompts: for each depth, ``repeats`` greedy runs of
    ``gen_tokens`` tokens after a ``depth``-token prompt (prefix cache off), each giving the
    prompt's prefill tokens/s and the decode tokens/s with ``depth`` tokens in context (llama.cpp's
    ``pp{depth}`` and ``tg{gen_tokens} @ d{depth}``). The medians, with the per-step p50."""
    out: list[dict[str, Any]] = []
    for depth in depths:
        ids = prompt_ids(model, depth)
        prefill: list[float] = []
        decode: list[float] = []
        steps: list[float] = []
        for _ in range(repeats):
            t = fixed_length_decode(model, ids, gen_tokens, prefix_cache=False).timings
            prefill.append(t.prefill_tokens_per_s)
            decode.append(t.decode_tokens_per_s)
            steps.extend(t.decode_steps_s)
        out.append(
            {
                "context": depth,
                "gen_tokens": gen_tokens,
                "prefill_tokens_per_s": statistics.median(prefill),
                "decode_tokens_per_s": statistics.median(decode),
                "step_p50_ms": percentile(steps, 50) * 1e3,
                "runs_prefill_tokens_per_s": prefill,
                "runs_decode_tokens_per_s": decode,
            }
        )
    return out


def batched_decode_run(
    model: Model, batch: int, *, gen_tokens: int, prompt_tokens: int = SHORT_PROMPT_TOKENS
) -> tuple[int, float]:
    """One run of ``batch`` concurrent greedy generations of ``gen_tokens`` tokens, each after
    a different ``prompt_tokens``-token prompt, stepped together with
    :func:`smolgen.step_streams` (one forward pass over the weights per step).

    Every sequence is prefilled (one first step) before the clock starts; returns the tokens
    generated after that and the wall seconds they took."""
    bias = no_stop_bias(model)
    streams = [
        model.generate(
            prompt_ids(model, prompt_tokens, offset=i),
            max_tokens=gen_tokens,
            temperature=0,
            logit_bias=bias,
            prefix_cache=False,
            stream=True,
        )
        for i in range(batch)
    ]
    try:
        active = list(streams)
        prefilled = False
        tokens = 0
        t0 = 0.0
        while active:
            results = step_streams(active)
            still: list[Any] = []
            for stream, r in zip(active, results, strict=True):
                if isinstance(r, BaseException):
                    raise r
                if r is None:
                    continue
                if prefilled:
                    tokens += 1
                if r.finish_reason is None:
                    still.append(stream)
            if not prefilled:
                prefilled = True
                t0 = time.perf_counter()
            active = still
        wall = time.perf_counter() - t0
    finally:
        for stream in streams:
            stream.close()
    expected = batch * (gen_tokens - 1)
    if tokens != expected:
        raise InternalError(f"batched decode generated {tokens} tokens, expected {expected}")
    return tokens, wall


def measure_batched_decode(
    model: Model,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    *,
    gen_tokens: int = 128,
    repeats: int = 3,
    prompt_tokens: int = SHORT_PROMPT_TOKENS,
) -> list[dict[str, Any]]:
    """Aggregate decode tokens/s with several sequences at once (see
    :func:`batched_decode_run`), per batch size: the median over ``repeats`` runs of generated
    tokens / wall seconds of the decode phase, and that per sequence."""
    if gen_tokens < 2:
        raise InvalidArgumentError(f"gen_tokens must be at least 2, got {gen_tokens}")
    out = []
    for batch in batch_sizes:
        runs = [
            batched_decode_run(model, batch, gen_tokens=gen_tokens, prompt_tokens=prompt_tokens)
            for _ in range(repeats)
        ]
        rates = [tokens / wall for tokens, wall in runs]
        rate = statistics.median(rates)
        out.append(
            {
                "batch": batch,
                "generated_tokens": runs[0][0],
                "tokens_per_s": rate,
                "per_sequence_tokens_per_s": rate / batch,
                "runs_tokens_per_s": rates,
            }
        )
    return out


def measure_bandwidth(threads: int, *, megabytes: int = 256, repeats: int = 5) -> float:
    """This machine's memory read bandwidth in GB/s with ``threads`` threads reading a
    ``megabytes`` buffer (the best of ``repeats`` passes, as the core measures it)."""
    return float(_core.measure_read_bandwidth(threads, megabytes, repeats))


# --------------------------------------------------------------------------------------------
# smolgen bench
# --------------------------------------------------------------------------------------------


def check_options(
    *,
    threads: int | None = None,
    prompt_tokens: int = 512,
    gen_tokens: int = 128,
    repeats: int = 3,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    contexts: Sequence[int] = (),
) -> None:
    """Raises :class:`InvalidArgumentError` for options :func:`run_bench` cannot measure."""

    def whole(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if threads is not None and (not whole(threads) or threads < 1):
        raise InvalidArgumentError(f"threads must be an integer >= 1, got {threads!r}")
    if not whole(prompt_tokens) or prompt_tokens < 1:
        raise InvalidArgumentError(f"prompt tokens must be an integer >= 1, got {prompt_tokens!r}")
    if not whole(gen_tokens) or gen_tokens < 2:
        raise InvalidArgumentError(
            f"gen tokens must be an integer >= 2 (decode speed counts the tokens after the "
            f"first), got {gen_tokens!r}"
        )
    if not whole(repeats) or repeats < 1:
        raise InvalidArgumentError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not batch_sizes or any(not whole(b) or b < 1 for b in batch_sizes):
        raise InvalidArgumentError(
            f"batch sizes must be positive integers, got {list(batch_sizes)!r}"
        )
    if any(not whole(c) or c < 1 for c in contexts):
        raise InvalidArgumentError(f"contexts must be positive integers, got {list(contexts)!r}")


def parse_counts(text: str, option: str = "--batch", example: str = "1,2,4,8") -> list[int]:
    """A comma-separated list of positive integers (``--batch``'s sizes, ``--context``'s depths):
    ``"1,2,4,8"`` -> ``[1, 2, 4, 8]``; anything else is an :class:`InvalidArgumentError` naming
    ``option``."""
    parts = [p.strip() for p in text.split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise InvalidArgumentError(
            f"{option} takes positive integers separated by commas, like {example}: {text!r}"
        )
    return sizes


#: Tokens decoded after each long prompt of ``smolgen bench --context`` (llama-bench's ``tg64``).
CONTEXT_GEN_TOKENS = 64


def _check_context(
    model: Model, prompt_tokens: int, gen_tokens: int, contexts: Sequence[int] = ()
) -> None:
    runs = [(prompt_tokens, 1), (SHORT_PROMPT_TOKENS, gen_tokens)]
    runs += [(depth, CONTEXT_GEN_TOKENS) for depth in contexts]
    for prompt, new in runs:
        _core.check_context(model.context_length, prompt, new)


def run_bench(
    model: str | os.PathLike[str] | Model | None = None,
    *,
    threads: int | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    quantize: str | None = None,
    prompt_tokens: int = 512,
    gen_tokens: int = 128,
    repeats: int = 3,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    contexts: Sequence[int] = (),
    bandwidth: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Everything ``smolgen bench`` measures, as one JSON-ready dict.

    ``model`` is a spec that is loaded here (``threads``, ``device``, ``dtype``, ``quantize``;
    prefix cache off), or a loaded :class:`Model` (then ``rss_after_load_bytes`` is the
    resident memory when this starts, and ``rss_before_load_bytes`` and ``model_rss_bytes``, the
    growth the load caused, are ``None``). After one warm-up generation it measures, in order, time
    to first token, prefill, decode, batched decode (:func:`measure_ttft`, :func:`measure_prefill`,
    :func:`measure_decode`, :func:`measure_batched_decode`), then prefill and decode after
    each of ``contexts`` prompt lengths (:func:`measure_context`), reads the peak resident memory,
    and, unless ``bandwidth=False`` or the device is not the CPU, measures the machine's read
    bandwidth with the same thread count (after the peak, since it allocates its own buffer).

    Keys: ``smolgen_version``, ``model`` (path, format, sizes, load time), ``system`` (engine,
    threads, kernel path, kernel paths), ``config``, ``memory``, ``ttft``, ``prefill``, ``decode``,
    ``batched_decode`` (one entry per batch size), ``context`` (one entry per depth),
    ``bandwidth`` (GB/s of weights read while decoding next to the measured GB/s and their
    ratio; ``None`` for what was not measured).
    """
    check_options(
        threads=threads,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        repeats=repeats,
        batch_sizes=batch_sizes,
        contexts=contexts,
    )
    batch_sizes, contexts = list(batch_sizes), list(contexts)
    plan = ["load", "warm-up", "ttft", "prefill", "decode"] + [f"batch {b}" for b in batch_sizes]
    plan += [f"context {c}" for c in contexts]
    if bandwidth:
        plan.append("bandwidth")
    total = len(plan)
    step = 0

    def report(description: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(description, step, total)

    rss_before_load: int | None = None
    if isinstance(model, Model):
        report("model already loaded")
        m = model
    else:
        report("loading the model")
        rss_before_load = resident_bytes()
        m = load(
            model,
            device=device,
            dtype=dtype,
            quantize=quantize,
            threads=threads,
            prefix_cache_bytes=0,
            progress=progress is not None,
        )
    rss_after_load = resident_bytes()
    info = m.info
    measure_bw = bandwidth and str(info.get("device", "cpu")).startswith("cpu")
    _check_context(m, prompt_tokens, gen_tokens, contexts)
    used_threads = (
        info.get("threads")
        or threads
        or int(os.environ.get("RAYON_NUM_THREADS", "0") or 0)
        or available_cpus()
    )

    report("warm-up generation")
    fixed_length_decode(
        m, prompt_ids(m, prompt_tokens), min(gen_tokens, SHORT_PROMPT_TOKENS), prefix_cache=False
    )
    report(f"time to first token ({SHORT_PROMPT_TOKENS}-token prompt, {_runs(repeats)})")
    ttft = measure_ttft(m, repeats=repeats)
    report(f"prefill ({prompt_tokens}-token prompt, {_runs(repeats)})")
    prefill = measure_prefill(m, prompt_tokens=prompt_tokens, repeats=repeats)
    report(f"decode ({gen_tokens} tokens, {_runs(repeats)})")
    decode = measure_decode(m, gen_tokens=gen_tokens, repeats=repeats)
    batched: list[dict[str, Any]] = []
    for b in batch_sizes:
        report(f"decode with {b} concurrent sequence{'s' if b > 1 else ''} ({_runs(repeats)})")
        (entry,) = measure_batched_decode(m, [b], gen_tokens=gen_tokens, repeats=repeats)
        entry["speedup_vs_single"] = entry["tokens_per_s"] / decode["tokens_per_s"]
        batched.append(entry)
    context: list[dict[str, Any]] = []
    for depth in contexts:
        report(
            f"prefill of {depth} tokens, then {CONTEXT_GEN_TOKENS} decoded after them "
            f"({_runs(repeats)})"
        )
        context += measure_context(m, [depth], gen_tokens=CONTEXT_GEN_TOKENS, repeats=repeats)
    # The kernel updates the high-water mark behind ru_maxrss lazily: it can trail the
    # resident memory read a moment ago.
    known = [x for x in (peak_rss_bytes(), resident_bytes(), rss_after_load) if x is not None]
    peak = max(known) if known else None

    machine_gbps: float | None = None
    if measure_bw:
        report(f"memory read bandwidth ({used_threads} threads)")
        machine_gbps = measure_bandwidth(used_threads)
    elif bandwidth:
        report("memory read bandwidth: skipped, the model is not on the CPU")
    weight_gbps = info["weight_bytes"] * decode["tokens_per_s"] / 1e9

    from . import __version__

    return {
        "smolgen_version": __version__,
        "model": {
            "path": str(info["path"]),
            "format": info.get("format"),
            "file_bytes": model_file_bytes(info["path"]),
            "weight_bytes": info["weight_bytes"],
            "parameters": info.get("parameters"),
            "kv_bytes_per_token": info.get("kv_bytes_per_token"),
            "kv_cache_format": info.get("kv_cache_format"),
            "context_length": info.get("context_length"),
            "load_s": info["load_seconds"],
        },
        "system": {
            "engine": info.get("engine"),
            "threads": used_threads,
            "device": info.get("device"),
            "cpu": cpu_name(),
            "cpus_available": available_cpus(),
            "kernel_path": _core.kernel_path(),
            "kernel_paths": list(_core.kernel_paths()),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "prompt_tokens": prompt_tokens,
            "gen_tokens": gen_tokens,
            "short_prompt_tokens": SHORT_PROMPT_TOKENS,
            "repeats": repeats,
            "batch_sizes": batch_sizes,
            "contexts": contexts,
        },
        "memory": {
            "rss_before_load_bytes": rss_before_load,
            "rss_after_load_bytes": rss_after_load,
            "model_rss_bytes": (
                rss_after_load - rss_before_load
                if rss_after_load is not None and rss_before_load is not None
                else None
            ),
            "peak_rss_bytes": peak,
        },
        "ttft": ttft,
        "prefill": prefill,
        "decode": decode,
        "batched_decode": batched,
        "context": context,
        "bandwidth": {
            "threads": used_threads,
            "weight_read_gb_per_s": weight_gbps,
            "machine_read_gb_per_s": machine_gbps,
            "ratio": weight_gbps / machine_gbps if machine_gbps else None,
        },
    }


def measured_throughput(
    model: str | os.PathLike[str] | Model | None = None,
    *,
    prompt_tokens: int = SHORT_PROMPT_TOKENS,
    gen_tokens: int = 64,
    repeats: int = 3,
) -> float:
    """Median decode tokens/s of ``repeats`` greedy generations of ``gen_tokens`` tokens.

    Every run decodes the same number of tokens (see :func:`fixed_length_decode`).
    """
    m = model if isinstance(model, Model) else load(model, progress=False, prefix_cache_bytes=0)
    fixed_length_decode(m, prompt_ids(m, prompt_tokens), 4, prefix_cache=False)  # warm-up
    return measure_decode(
        m, gen_tokens=gen_tokens, repeats=max(1, repeats), prompt_tokens=prompt_tokens
    )["tokens_per_s"]
