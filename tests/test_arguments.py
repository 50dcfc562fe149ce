"""Bad arguments from Python: every one an ``InvalidArgumentError`` naming the argument (and
leaving the model usable), never the conversion layer's ``OverflowError``,
``UnicodeEncodeError``, "failed to extract" ``TypeError`` or ``RuntimeError``."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import smolgen
from smolgen import _core

HUGE = 2**64
SURROGATE = "a\ud800b"


@pytest.fixture(scope="module")
def model(tiny_gguf):
    return smolgen.load(tiny_gguf)


INTEGER_SETTINGS = {
    "seed": [-1, HUGE, -HUGE, 1.5, "7", True],
    "max_tokens": [-1, 0, HUGE, 2.0, "3"],
    "top_k": [-1, HUGE, 1.5],
    "logprobs": [-1, HUGE, "2"],
}
FLOAT_SETTINGS = ["temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty"]


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, v) for name, values in INTEGER_SETTINGS.items() for v in values]
    + [(name, v) for name in FLOAT_SETTINGS for v in ["hot", 10**400]]
    + [("temperature", math.nan), ("temperature", -math.inf), ("top_p", math.inf)]
    + [("logit_bias", "abc"), ("logit_bias", {HUGE: 1.0}), ("logit_bias", {10**23: 1.0})]
    + [("logit_bias", {-1: 1.0}), ("logit_bias", {5: "x"}), ("logit_bias", {5: math.nan})]
    + [("stop", 5), ("stop", SURROGATE), ("stop", ["ok", SURROGATE])]
    + [("prefix_cache", "yes"), ("temprature", 0.5)],
)
def test_bad_settings_are_invalid_arguments(model, name, value):
    with pytest.raises(smolgen.InvalidArgumentError, match=name.split("_")[0]):
        model.generate("hello", **{name: value})


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.generate([HUGE]),
        lambda m: m.generate([-1, 5]),
        lambda m: m.generate(SURROGATE),
        lambda m: m.generate(3.5),
        lambda m: m.logits([HUGE]),
        lambda m: m.logits(SURROGATE),
        lambda m: m.attention([5, 6], layers=[HUGE]),
        lambda m: m.attention([5, 6], layers=[-1]),
        lambda m: m.tokenize(SURROGATE),
        lambda m: m.tokenize(5),
        lambda m: m.tokens(SURROGATE),
        lambda m: m.detokenize([HUGE]),
        lambda m: m.detokenize("abc"),
        lambda m: m.tokenizer.encode(SURROGATE),
        lambda m: m.tokenizer.piece(HUGE),
        lambda m: m.tokenizer.piece(-1),
        lambda m: m.tokenizer.decode([2**70]),
        lambda m: m.configure_prefix_cache(HUGE * 2**64),
        lambda m: m.configure_prefix_cache(-1),
        lambda m: m.peek(SURROGATE),
        lambda m: m.chat([{"role": "user", "content": SURROGATE}], max_tokens=2),
        lambda m: _core.check_context(HUGE * 2**64, 5),
        lambda m: _core.check_context(96, 5, max_tokens=-3),
    ],
)
def test_bad_arguments_are_invalid_arguments(model, call):
    with pytest.raises(smolgen.InvalidArgumentError):
        call(model)
    assert model.generate("hello", max_tokens=2, temperature=0).token_ids  # still usable


def test_load_arguments(tiny_gguf):
    for threads in (HUGE, 0, -1, 1.5, True):
        with pytest.raises(smolgen.InvalidArgumentError, match="threads"):
            smolgen.load(tiny_gguf, threads=threads)
    for size in (HUGE * 2**64, -1, "1 MB"):
        with pytest.raises(smolgen.InvalidArgumentError, match="prefix cache"):
            smolgen.load(tiny_gguf, prefix_cache_bytes=size)
    with pytest.raises(smolgen.InvalidArgumentError, match="threads"):
        _core.measure_read_bandwidth(HUGE)


def test_the_error_is_also_the_builtin_callers_expect(model):
    """``except TypeError`` and ``except ValueError`` written against Python's own errors still
    catch these."""
    with pytest.raises(TypeError):
        model.generate("hello", top_k="many")
    with pytest.raises(ValueError):
        model.generate("hello", seed=-1)


def test_a_stream_steps_in_one_place_at_a_time(model):
    a = model.generate("hello", max_tokens=5, stream=True)
    b = model.generate("world", max_tokens=5, stream=True)
    results = smolgen.step_streams([a, a, b])
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], smolgen.InvalidArgumentError)
    assert "one step at a time" in str(results[1])
    assert not isinstance(results[2], BaseException)

    # From two threads: one steps, the other is told, neither corrupts the stream.
    c = model.generate("x" * 60, max_tokens=30, stream=True)
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            for _ in c:
                pass
        except smolgen.InvalidArgumentError as e:
            errors.append(e)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("one step at a time" in str(e) for e in errors)
    assert c.completion is not None and c.completion.usage.completion_tokens == 30


CHILD = """
import signal, sys, time, smolgen
from smolgen.bench import no_stop_bias
# A shell that starts a job in the background makes it ignore SIGINT, and children inherit
# that: Ctrl-C must reach this one as it does an interactive process.
signal.signal(signal.SIGINT, signal.default_int_handler)
model = smolgen.load(sys.argv[1], threads=1)
print("ready", flush=True)
t0 = time.monotonic()
try:
    # End-of-generation tokens suppressed: the run must outlast the signal.
    model.generate(
        [5] * 4, max_tokens=int(sys.argv[2]), temperature=0.7, seed=1,
        logit_bias=no_stop_bias(model),
    )
except KeyboardInterrupt:
    print("interrupted after", round(time.monotonic() - t0, 2), flush=True)
    c = model.generate("hello", max_tokens=2, temperature=0)
    print("still usable", len(c.token_ids), flush=True)
    sys.exit(0)
print("finished", flush=True)
"""


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_ctrl_c_stops_a_long_generate_within_a_step(smollm2_gguf):
    """Ctrl-C during a non-streaming generate raises KeyboardInterrupt within a step and leaves
    the model usable (before, it was held until the whole generation was done)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(smollm2_gguf), "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:  # never left running (its pipes closed) when this fails
            child.kill()
            child.communicate()
    waited = time.monotonic() - sent
    assert child.returncode == 0, err
    assert "interrupted after" in out and "still usable 2" in out, out
    assert waited < 5, f"took {waited:.1f} s to stop"


def test_numpy_ids_still_work(model):
    ids = np.array([5, 6, 7], dtype=np.int64)
    assert model.generate(ids, max_tokens=2, temperature=0).token_ids
    assert model.detokenize(np.array([40, 72], dtype=np.uint32))
