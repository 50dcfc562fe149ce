"""The CPU engine: which engine runs a model, threads, batched steps of several generations."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import smolgen
import tiny_llama
from conftest import TEST_DEVICE
from smolgen import _core
from smolgen.bench import prompt_ids

PROMPTS = ["The theory of relativity", "Once upon a time", "def fib(n):", "Water boils at"]

# The same bits whatever the shape of a pass is our CPU kernels' property; a GPU's GEMM sums in
# an order that depends on it, and `test_accelerator` holds the GPU to the exact pass instead.
same_bits_on_the_cpu = pytest.mark.skipif(
    TEST_DEVICE != "cpu", reason="bit-identical passes of any shape: our CPU kernels only"
)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16", "F32"])
def test_every_gguf_type_runs_on_our_kernels(tmp_path, tiny_weights, qtype):
    kernels = _core.kernel_path()
    assert kernels in _core.kernel_paths()
    path = tiny_llama.write_gguf(tmp_path / f"tiny-{qtype}.gguf", tiny_weights, qtype=qtype)
    info = smolgen.load(path, threads=2).info
    assert info["engine"] == kernels, qtype
    assert info["threads"] == 2


@pytest.mark.parametrize("dtype", [None, "f32", "f16", "bf16"])
def test_safetensors_run_on_our_kernels(tiny_dir, dtype):
    """A Hugging Face directory runs on the float kernels in its own dtype, or in the one asked
    for at load; only forcing candle gives candle."""
    info = smolgen.load(tiny_dir, threads=2, dtype=dtype).info
    assert info["engine"] == _core.kernel_path()
    assert info["threads"] == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SMOLGEN_ENGINE", "ours"), ("SMOLGEN_KERNELS", "avx9"), ("SMOLGEN_THREADS", "0")],
)
def test_an_unknown_setting_is_an_invalid_argument_error(tiny_gguf, variable, value):
    """The environment is parsed strictly, once per process: a value it does not know fails the
    load with a typed error naming the variable, instead of silently choosing something else."""
    code = (
        "import sys, smolgen\n"
        "try:\n"
        "    smolgen.load(sys.argv[1])\n"
        "except smolgen.InvalidArgumentError as e:\n"
        "    print(e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tiny_gguf)],
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        check=True,
    )
    assert variable in run.stdout


def test_info_reports_the_settings(tiny_gguf):
    settings = smolgen.load(tiny_gguf).info["settings"]
    assert set(settings) == {
        "SMOLGEN_KERNELS",
        "SMOLGEN_ENGINE",
        "SMOLGEN_THREADS",
        "SMOLGEN_KV_CACHE",
        "SMOLGEN_GPU_WEIGHTS",
    }
    expected = os.environ.get("SMOLGEN_ENGINE", "").strip().lower() or "auto"
    assert settings["SMOLGEN_ENGINE"] == expected


def _logits_in_a_process(model, text: str, env: dict[str, str], out) -> tuple[np.ndarray, str]:
    """All positions' logits of `text` and the engine name, from a fresh process with `env` set
    (`SMOLGEN_ENGINE` and `SMOLGEN_KERNELS` are read once per process)."""
    code = (
        "import sys, numpy as np, smolgen\n"
        "m = smolgen.load(sys.argv[1], threads=2)\n"
        "np.save(sys.argv[2], m.logits(m.tokenize(sys.argv[3]), 'all'))\n"
        "print(m.info['engine'])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(model), out, text],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return np.load(out), run.stdout.strip()


def test_our_kernels_agree_with_candle_on_the_real_model(smollm2_gguf, tmp_path):
    """The same file through candle (forced) and through our kernels: the same greedy start and
    top-5, log-probabilities within this model's 8-bit-activation noise."""
    rows = {}
    for engine in ["candle", "auto"]:
        logits, name = _logits_in_a_process(
            smollm2_gguf,
            "The theory of relativity",
            {"SMOLGEN_ENGINE": engine},
            tmp_path / f"{engine}.npy",
        )
        assert (name == "candle") == (engine == "candle")
        rows[engine] = logits.astype(np.float64)
    a, b = (x - np.log(np.exp(x).sum(-1, keepdims=True)) for x in rows.values())
    for ra, rb in zip(a, b, strict=True):
        top = np.argsort(-ra)[:5]
        assert rb.argmax() == ra.argmax()
        assert len(set(np.argsort(-rb)[:5]) & set(top)) >= 4
        np.testing.assert_allclose(rb[top], ra[top], atol=0.5)


def test_the_f32_kv_cache_is_the_precise_path(tiny_dir, tiny_weights, tmp_path):
    """`SMOLGEN_KV_CACHE=f32` keeps keys and values in f32: the logits equal the exact pass to
    f32 accuracy, and the default f16 cache is near the exact pass over keys and values rounded
    to f16, further from the exact one."""
    import tiny_llama
    from reference_llama import forward

    model = smolgen.load(tiny_dir)
    text = "The f32 cache, then the f16 one"
    ids = model.tokenize(text)
    precise, _ = _logits_in_a_process(
        tiny_dir, text, {"SMOLGEN_KV_CACHE": "f32"}, tmp_path / "a.npy"
    )
    exact = forward(tiny_weights, tiny_llama.CONFIG, ids, interleaved=False)
    np.testing.assert_allclose(precise, exact, atol=2e-4, rtol=1e-4)
    half = model.logits(ids, positions="all")
    rounded = forward(tiny_weights, tiny_llama.CONFIG, ids, interleaved=False, kv_dtype=np.float16)
    # Rounding f32 keys and f64 ones to f16 can differ by one f16 step (2^-11 relative).
    np.testing.assert_allclose(half, rounded, atol=2e-3, rtol=1e-3)
    assert np.abs(half - exact).max() > np.abs(precise - exact).max()
    code = "import sys, json, smolgen; print(json.dumps(smolgen.load(sys.argv[1]).info))"
    run = subprocess.run(
        [sys.executable, "-c", code, str(tiny_dir)],
        env={**os.environ, "SMOLGEN_KV_CACHE": "f32"},
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(run.stdout)
    assert info["kv_cache_format"] == "f32" and info["settings"]["SMOLGEN_KV_CACHE"] == "f32"
    assert info["kv_bytes_per_token"] == 2 * model.info["kv_bytes_per_token"]


def _same_logits_on_every_x86_path(model, tmp_path) -> None:
    forced = {"avx2+fma": "avx2", "avx2+vnni": "avxvnni", "avx512vnni": "avx512"}
    paths = [p for p in forced if p in _core.kernel_paths()]
    if len(paths) < 2:
        pytest.skip("this CPU has fewer than two x86 SIMD paths")
    logits = []
    for path in paths:
        got, name = _logits_in_a_process(
            model,
            "Same bits on every path",
            {"SMOLGEN_KERNELS": forced[path]},
            tmp_path / f"{path}.npy",
        )
        assert name == path
        logits.append(got)
    for other in logits[1:]:
        assert np.array_equal(logits[0], other)


def test_every_x86_kernel_path_gives_the_same_logits(smollm2_gguf, tmp_path):
    """AVX2, AVX-VNNI and AVX-512 multiply the repacked weights in the same order (each equals
    the packed reference bit for bit), so the whole model gives the same bits on any of them."""
    _same_logits_on_every_x86_path(smollm2_gguf, tmp_path)


@pytest.mark.parametrize("qtype", ["F16", "BF16", "F32"])
def test_float_models_give_the_same_logits_on_every_x86_path(tmp_path, tiny_weights, qtype):
    """Float matrices are repacked too, each output one FMA chain along its row on every path."""
    path = tiny_llama.write_gguf(tmp_path / f"tiny-{qtype}.gguf", tiny_weights, qtype=qtype)
    _same_logits_on_every_x86_path(path, tmp_path)


def test_logits_do_not_depend_on_the_thread_count(smollm2_gguf):
    ids = smolgen.load(smollm2_gguf).tokenize("Thread counts change nothing")
    one = smolgen.load(smollm2_gguf, threads=1).logits(ids, "all")
    two = smolgen.load(smollm2_gguf, threads=2).logits(ids, "all")
    three = smolgen.load(smollm2_gguf, threads=3).logits(ids, "all")
    assert np.array_equal(one, two) and np.array_equal(two, three)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2", 100_000])
def test_bad_thread_counts_are_invalid(tiny_gguf, threads):
    with pytest.raises(smolgen.InvalidArgumentError):
        smolgen.load(tiny_gguf, threads=threads)


@same_bits_on_the_cpu
def test_batched_steps_give_each_stream_its_lone_tokens(smollm2):
    """Greedy, seeded sampling, a stop string and log-probs, stepped together: every stream gets
    exactly what it gets alone, finished streams give None, and the usage is its own."""
    settings = [
        {"temperature": 0},
        {"temperature": 0.9, "top_p": 0.9, "seed": 7},
        {"temperature": 0, "stop": [" the"]},
        {"temperature": 0.7, "top_k": 20, "seed": 3, "logprobs": 2},
    ]
    alone = [
        smollm2.generate(p, max_tokens=40, **s) for p, s in zip(PROMPTS, settings, strict=True)
    ]
    streams = [
        smollm2.generate(p, max_tokens=40, stream=True, **s)
        for p, s in zip(PROMPTS, settings, strict=True)
    ]
    got: list[list[int]] = [[] for _ in streams]
    finished_seen = False
    while True:
        out = smolgen.step_streams(streams)
        if all(o is None for o in out):
            break
        for i, o in enumerate(out):
            assert not isinstance(o, Exception), o
            if o is None:
                finished_seen = True
            else:
                got[i].append(o.token_id)
    assert finished_seen  # the stop string ends one early
    for i, (stream, ref) in enumerate(zip(streams, alone, strict=True)):
        assert got[i] == ref.token_ids, settings[i]
        assert stream.completion.text == ref.text
        assert stream.completion.usage.completion_tokens == len(ref.token_ids)
        assert stream.completion.finish_reason == ref.finish_reason
    assert [lp.logprob for lp in streams[3].completion.logprobs] == pytest.approx(
        [lp.logprob for lp in alone[3].logprobs], abs=0
    )


def test_a_failing_stream_does_not_fail_the_batch(smollm2, tiny_gguf):
    """Streams of different models step one by one; an exhausted or closed stream gives None."""
    tiny = smolgen.load(tiny_gguf)
    a = smollm2.generate(PROMPTS[0], max_tokens=3, temperature=0, stream=True)
    b = tiny.generate([1, 2, 3], max_tokens=3, temperature=0, stream=True)
    c = smollm2.generate(PROMPTS[1], max_tokens=3, temperature=0, stream=True)
    c.close()
    first = smolgen.step_streams([a, b, c])
    assert first[0] is not None and first[1] is not None and first[2] is None
    lone = smollm2.generate(PROMPTS[0], max_tokens=1, temperature=0)
    assert first[0].token_id == lone.token_ids[0]
    twice = smolgen.step_streams([a, a])  # the same stream cannot take two steps at once
    assert not isinstance(twice[0], BaseException)
    assert isinstance(twice[1], smolgen.InvalidArgumentError)


def test_read_bandwidth_is_measured():
    gbs = _core.measure_read_bandwidth(1, 16, 2)
    assert 0.1 < gbs < 10_000
    with pytest.raises(smolgen.InvalidArgumentError):
        _core.measure_read_bandwidth(0)


@same_bits_on_the_cpu
def test_long_prompts_run_in_slices_with_the_same_bits(smollm2):
    """Prompts over 512 tokens are prefilled 512 at a time; every position's logits are the
    bits a one-position-at-a-time reading would give, whatever the slicing."""
    ids = prompt_ids(smollm2, 1100)
    all_rows = smollm2.logits(ids, "all")
    assert all_rows.shape == (1100, smollm2.info["vocab_size"])
    for n in (300, 512, 513, 1024, 1100):
        assert np.array_equal(smollm2.logits(ids[:n], "last"), all_rows[n - 1]), n


def test_a_long_prompt_steps_alongside_short_ones(smollm2):
    prompts = [prompt_ids(smollm2, 700), smollm2.tokenize(PROMPTS[0]), smollm2.tokenize(PROMPTS[1])]
    alone = [smollm2.generate(p, max_tokens=6, temperature=0).token_ids for p in prompts]
    streams = [smollm2.generate(p, max_tokens=6, temperature=0, stream=True) for p in prompts]
    while not all(c is None for c in smolgen.step_streams(streams)):
        pass
    assert [s.completion.token_ids for s in streams] == alone


# The mix llama.cpp's Q4_K_M gives a model: Q6_K for the value and down projections (half of
# them in a large model), Q8_0 where a row is not a multiple of 256; and a Q5_0 matrix too.
K_MIXES = {
    "Q2_K": {},
    "Q3_K": {},
    "Q3_K_M": {"attn_v": "Q5_K", "ffn_down": "Q4_K", "token_embd": "Q6_K"},
    "Q4_K": {},
    "Q6_K": {},
    "Q4_K_M": {"attn_v": "Q6_K", "ffn_down": "Q6_K", "token_embd": "Q8_0", "attn_k": "Q5_0"},
    "Q5_K": {},
    "Q5_K_M": {"attn_v": "Q6_K", "ffn_down": "Q6_K", "token_embd": "Q8_0", "attn_k": "Q5_1"},
}


@pytest.mark.parametrize("mix", list(K_MIXES))
def test_k_quant_files_run_on_our_kernels(tmp_path, mix):
    """Superblocks of 256 values, alone and mixed with other types in one layer (so one
    activation is quantized for several types): our kernels match the reference forward pass
    on the file's own (dequantized) weights."""
    from reference_llama import forward, load_gguf_weights

    cfg = tiny_llama.K_CONFIG
    weights = tiny_llama.random_weights(seed=3, cfg=cfg)
    qtype = mix.removesuffix("_M")
    path = tiny_llama.write_gguf(
        tmp_path / f"tiny-{mix}.gguf", weights, cfg, qtype=qtype, qtypes=K_MIXES[mix]
    )
    model = smolgen.load(path)
    assert model.info["engine"] == _core.kernel_path()
    ids = [1, 40, 72, 75, 78, 259, 34, 200]
    file_weights, _ = load_gguf_weights(str(path))
    ref = forward(file_weights, cfg, ids, interleaved=True)
    ours = model.logits(ids, "all")
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 0.03
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_quantize_names_the_types_and_refuses_bad_input():
    assert {
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K",
        "f16", "bf16", "f32",
    } <= set(_core.weight_types())  # fmt: skip
    block = _core.quantize("Q8_0", np.linspace(-1, 1, 32, dtype=np.float32))
    assert len(block) == 34
    with pytest.raises(smolgen.InvalidArgumentError, match="q4_0"):
        _core.quantize("q3_x", np.zeros(32, np.float32))
    with pytest.raises(smolgen.InvalidArgumentError, match="blocks"):
        _core.quantize("q4_K", np.zeros(32, np.float32))
    with pytest.raises(smolgen.InvalidArgumentError, match="contiguous"):
        _core.quantize("q8_0", np.zeros(64, np.float32)[::2])
    # Non-finite values give some bytes of the right length, never a crash.
    bad = np.full(256, np.nan, np.float32)
    bad[3] = np.inf
    for name in _core.weight_types():
        assert len(_core.quantize(name, bad)) > 0, name


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_an_untied_output_matrix_is_read_by_our_kernels(tmp_path, tiny_weights, qtype):
    """A GGUF with its own output.weight (not tied to the embeddings) on our kernels matches the
    reference forward pass on the file's own (dequantized) weights."""
    from reference_llama import forward, load_gguf_weights

    rng = np.random.default_rng(5)
    cfg = tiny_llama.CONFIG
    weights = dict(tiny_weights)
    weights["output.weight"] = rng.standard_normal((cfg.vocab_size, cfg.hidden_size)).astype(
        np.float32
    )
    path = tiny_llama.write_gguf(tmp_path / f"untied-{qtype}.gguf", weights, qtype=qtype)
    model = smolgen.load(path)
    assert model.info["engine"] != "candle" and not model.info["tied_embeddings"]
    ids = [1, 40, 72, 75, 78, 259, 34, 200]
    file_weights, _ = load_gguf_weights(str(path))
    ref = forward(file_weights, cfg, ids, interleaved=True)
    ours = model.logits(ids, "all")
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 0.03
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
