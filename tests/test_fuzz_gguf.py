"""The GGUF fuzzer's fixed cases and every file it ever caught: each loads and generates, or
fails with a typed smolgen error that names the file (``fuzz_driver.judge``). Longer runs:
``make fuzz``."""

from __future__ import annotations

import pytest

import fuzz_driver
import fuzz_gguf

# Cases per engine: a few seconds of fuzzing, always the same files.
CASES = {"auto": 6000, "candle": 1500}

REGRESSION_FILES = sorted(fuzz_gguf.REGRESSIONS.glob("*.gguf"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", sorted(CASES))
def test_fuzzed_gguf_files_load_or_fail_cleanly(tmp_path, engine):
    fuzz_driver.check_cases(fuzz_gguf.FORMAT, tmp_path, CASES[engine], engine)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", sorted(CASES))
def test_every_saved_regression_loads_or_fails_cleanly(engine):
    assert REGRESSION_FILES, "tests/regressions/ holds the files the fuzzer has caught"
    fuzz_driver.check_replay(REGRESSION_FILES, engine)


def test_cases_are_the_same_on_every_run(tmp_path):
    fuzz_driver.check_cases_repeat(fuzz_gguf.FORMAT, tmp_path)


def test_the_generator_handles_negative_values():
    # A metadata value already mutated below zero (seen in a long run: case 663630 of seed 7).
    rng = fuzz_gguf.random.Random(0)
    for v in (-(2**32) + 4, -1, 0, 2**64 - 1):
        for _ in range(50):
            assert isinstance(fuzz_gguf._near(rng, v), int)


def test_the_parts_of_a_valid_file_write_back_to_the_same_bytes(tmp_path):
    for label, data in fuzz_gguf.base_files(tmp_path / "bases"):
        assert bytes(fuzz_gguf.serialize(fuzz_gguf.parse(data))[0]) == data, label


def outcome(stage, cls, message, module="smolgen.errors"):
    smolgen = module == "smolgen.errors"
    return {"stage": stage, "class": cls, "module": module, "smolgen": smolgen, "message": message}


def test_the_judge_accepts_typed_errors_and_nothing_else(tmp_path):
    path = tmp_path / "m.gguf"
    named = f"malformed model file {path}: bad"
    ok = [
        {"stage": "done"},
        outcome("load", "MalformedModelError", named),
        outcome("generate", "ContextLengthExceededError", "x"),
    ]
    for o in ok:
        assert fuzz_driver.judge(o, path) is None, o
    bad = [
        {"stage": "crash", "why": "the process died (-11)"},
        {"stage": "hang", "why": "no answer"},
        outcome("load", "PanicException", "x", module="pyo3_runtime"),
        outcome("load", "InternalError", named),
        outcome("load", "UnsupportedModelError", "no path"),
        outcome("generate", "InvalidArgumentError", "NaN"),
        outcome("generate", "MalformedModelError", "no path"),
    ]
    for o in bad:
        assert fuzz_driver.judge(o, path) is not None, o
