"""``smolgen bench`` and the measuring helpers in ``smolgen.bench``.

Speeds are never asserted (they depend on the machine and its load): only the report's shape,
that every number is positive and finite, and that the numbers agree with each other.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

import smolgen
from smolgen import bench
from test_cli import smolgen as smolgen_cli

SMALL = ("--prompt-tokens", "32", "--gen-tokens", "8")
TOP_KEYS = {
    "smolgen_version",
    "model",
    "system",
    "config",
    "memory",
    "ttft",
    "prefill",
    "decode",
    "batched_decode",
    "context",
    "bandwidth",
}


def positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < math.inf


def check_report(
    r: dict, *, gen_tokens: int, repeats: int, batches: list[int], contexts: tuple[int, ...] = ()
) -> None:
    assert set(r) == TOP_KEYS
    m, s, cfg, mem = r["model"], r["system"], r["config"], r["memory"]
    assert isinstance(m["path"], str) and m["format"] == "gguf"
    for key in ("file_bytes", "weight_bytes", "parameters", "kv_bytes_per_token", "load_s"):
        assert positive(m[key]), key
    assert isinstance(s["engine"], str) and s["engine"]
    assert isinstance(s["threads"], int) and s["threads"] >= 1
    assert s["kernel_path"] in s["kernel_paths"]
    assert isinstance(s["kernel_paths"], list) and all(
        isinstance(k, str) for k in s["kernel_paths"]
    )
    assert cfg["gen_tokens"] == gen_tokens and cfg["repeats"] == repeats
    assert cfg["batch_sizes"] == batches
    if sys.platform.startswith("linux"):
        assert positive(mem["rss_after_load_bytes"])
        assert mem["peak_rss_bytes"] >= mem["rss_after_load_bytes"]
        if mem["rss_before_load_bytes"] is not None:
            assert positive(mem["rss_before_load_bytes"])
            grown = mem["rss_after_load_bytes"] - mem["rss_before_load_bytes"]
            assert mem["model_rss_bytes"] == grown

    ttft, prefill, decode = r["ttft"], r["prefill"], r["decode"]
    assert ttft["prompt_tokens"] == bench.SHORT_PROMPT_TOKENS
    assert positive(ttft["ttft_s"]) and len(ttft["runs_s"]) == repeats
    assert min(ttft["runs_s"]) <= ttft["ttft_s"] <= max(ttft["runs_s"])
    assert positive(prefill["tokens_per_s"]) and len(prefill["runs_tokens_per_s"]) == repeats
    assert decode["gen_tokens"] == gen_tokens and len(decode["runs_tokens_per_s"]) == repeats
    for key in ("tokens_per_s", "step_p50_ms", "step_p95_ms", "step_p50_tokens_per_s",
                "step_p95_tokens_per_s"):  # fmt: skip
        assert positive(decode[key]), key
    assert decode["step_p95_ms"] >= decode["step_p50_ms"]
    assert decode["step_p95_tokens_per_s"] <= decode["step_p50_tokens_per_s"]
    assert decode["step_p50_tokens_per_s"] == pytest.approx(1e3 / decode["step_p50_ms"])

    assert [b["batch"] for b in r["batched_decode"]] == batches
    for b in r["batched_decode"]:
        assert b["generated_tokens"] == b["batch"] * (gen_tokens - 1)
        assert positive(b["tokens_per_s"]) and len(b["runs_tokens_per_s"]) == repeats
        assert b["per_sequence_tokens_per_s"] == pytest.approx(b["tokens_per_s"] / b["batch"])
        assert b["speedup_vs_single"] == pytest.approx(b["tokens_per_s"] / decode["tokens_per_s"])

    assert cfg["contexts"] == list(contexts)
    assert [c["context"] for c in r["context"]] == list(contexts)
    for c in r["context"]:
        assert c["gen_tokens"] == bench.CONTEXT_GEN_TOKENS
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "step_p50_ms"):
            assert positive(c[key]), key
        assert len(c["runs_prefill_tokens_per_s"]) == len(c["runs_decode_tokens_per_s"]) == repeats
        assert min(c["runs_decode_tokens_per_s"]) <= c["decode_tokens_per_s"]

    bw = r["bandwidth"]
    assert bw["threads"] == s["threads"]
    assert bw["weight_read_gb_per_s"] == pytest.approx(
        m["weight_bytes"] * decode["tokens_per_s"] / 1e9
    )


def test_bench_json_on_the_tiny_model(tiny_gguf):
    res = smolgen_cli("bench", str(tiny_gguf), *SMALL, "--threads", "1", "--repeats", "2",
                      "--batch", "1,2,3", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)  # stdout is the JSON object and nothing else
    check_report(r, gen_tokens=8, repeats=2, batches=[1, 2, 3])
    assert r["system"]["threads"] == 1
    assert r["model"]["path"] == str(tiny_gguf)
    assert r["model"]["file_bytes"] == tiny_gguf.stat().st_size
    bw = r["bandwidth"]  # measured here: the one run that includes the bandwidth test
    assert positive(bw["machine_read_gb_per_s"])
    assert bw["ratio"] == pytest.approx(bw["weight_read_gb_per_s"] / bw["machine_read_gb_per_s"])
    assert "[1/" in res.stderr and "warm-up" in res.stderr  # progress goes to stderr


def test_bench_json_on_the_real_model(smollm2_gguf):
    res = smolgen_cli("bench", str(smollm2_gguf), *SMALL, "--repeats", "1", "--batch", "1,2",
                      "--context", "100,700", "--no-bandwidth", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    check_report(r, gen_tokens=8, repeats=1, batches=[1, 2], contexts=(100, 700))
    assert r["model"]["kv_cache_format"] == "f16"
    assert r["model"]["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 2
    assert r["model"]["parameters"] == 134_515_008
    assert r["system"]["engine"] in {
        "avx512vnni",
        "avx2+vnni",
        "avx2+fma",
        "neon",
        "scalar",
        "candle",
    }
    assert r["bandwidth"]["machine_read_gb_per_s"] is None and r["bandwidth"]["ratio"] is None


def test_bench_table(tiny_gguf):
    res = smolgen_cli("bench", str(tiny_gguf), *SMALL, "--repeats", "1", "--batch", "1,2",
                      "--context", "20", "--no-bandwidth")  # fmt: skip
    assert res.returncode == 0, res.stderr
    for text in ("TTFT", "prefill", "decode", "p95", "batch 2", "context 20", "weight reads",
                 "not measured"):  # fmt: skip
        assert text in res.stdout, text
    assert "smolgen bench: [" not in res.stdout  # progress stays on stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--threads", "0"), "threads"),
        (("--prompt-tokens", "0"), "prompt tokens"),
        (("--gen-tokens", "1"), "gen tokens"),
        (("--repeats", "0"), "repeats"),
        (("--batch", "0,2"), "--batch"),
        (("--batch", "1,two"), "--batch"),
        (("--batch", "1.5"), "--batch"),
        (("--batch", ""), "--batch"),
        (("--context", "0"), "--context"),
        (("--context", "2k"), "--context"),
    ],
)
def test_bench_bad_arguments(args, message):
    res = smolgen_cli("bench", "no-such-model-is-ever-loaded", *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "smolgen: error:" in res.stderr


def test_bench_model_errors(tmp_path, tiny_gguf):
    res = smolgen_cli("bench", str(tmp_path / "missing.gguf"))
    assert res.returncode == 3
    # The tiny model's window is 96 tokens: the default 512-token prefill cannot fit.
    res = smolgen_cli("bench", str(tiny_gguf), "--no-bandwidth")
    assert res.returncode == 6 and "maximum context length is 96" in res.stderr
    # So can't a context measurement past it, checked before anything is measured.
    res = smolgen_cli("bench", str(tiny_gguf), *SMALL, "--context", "90", "--no-bandwidth")
    assert res.returncode == 6 and "maximum context length is 96" in res.stderr


def test_bench_help():
    res = smolgen_cli("bench", "--help")
    assert res.returncode == 0 and "--gen-tokens" in res.stdout and "--batch" in res.stdout


# ---- the helpers, in process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    return smolgen.load(tiny_gguf, prefix_cache_bytes=0, progress=False)


def test_prompts_are_fixed_length_and_distinct(tiny):
    a, b = bench.prompt_ids(tiny, 16), bench.prompt_ids(tiny, 16, offset=1)
    assert len(a) == len(b) == 16 and a != b
    assert a == bench.prompt_ids(tiny, 16)
    assert a[1:] == b[:-1]
    assert len(bench.prompt_ids(tiny, 500)) == 500


def test_fixed_length_decode_ignores_end_of_generation(tiny):
    bias = bench.no_stop_bias(tiny)
    assert bias and set(bias.values()) == {bench.NO_STOP_BIAS}
    c = bench.fixed_length_decode(tiny, bench.prompt_ids(tiny, 8), 20, prefix_cache=False)
    assert len(c.token_ids) == 20 and c.finish_reason == "length"
    assert not set(c.token_ids) & set(bias)


def test_batched_decode_counts_only_the_decode_phase(tiny):
    tokens, wall = bench.batched_decode_run(tiny, 3, gen_tokens=5)
    assert tokens == 3 * 4 and wall > 0
    (entry,) = bench.measure_batched_decode(tiny, [2], gen_tokens=4, repeats=2)
    assert entry["batch"] == 2 and entry["generated_tokens"] == 6
    assert len(entry["runs_tokens_per_s"]) == 2


def test_run_bench_on_a_loaded_model(tiny):
    seen: list[tuple[int, int]] = []
    r = bench.run_bench(
        tiny,
        prompt_tokens=20,
        gen_tokens=3,
        repeats=1,
        batch_sizes=[2],
        bandwidth=False,
        progress=lambda description, step, total: seen.append((step, total)),
    )
    check_report(r, gen_tokens=3, repeats=1, batches=[2])
    # Loaded before the bench started: what the load added is not known.
    assert r["memory"]["rss_before_load_bytes"] is None
    assert r["memory"]["model_rss_bytes"] is None
    assert [s for s, _ in seen] == list(range(1, len(seen) + 1))
    assert {t for _, t in seen} == {len(seen)}


def test_percentile_and_batch_parsing():
    assert bench.percentile([3.0], 95) == 3.0
    assert bench.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert bench.percentile([0.0, 10.0], 95) == 10.0  # nearest rank: one of the values
    assert bench.parse_counts("1, 2,4,8") == [1, 2, 4, 8]
    for bad in ("", "0", "-1", "a", "1,,2"):
        with pytest.raises(smolgen.InvalidArgumentError):
            bench.parse_counts(bad)
    with pytest.raises(smolgen.InvalidArgumentError):
        bench.check_options(gen_tokens=1)
    with pytest.raises(smolgen.InvalidArgumentError):
        bench.check_options(batch_sizes=[])
