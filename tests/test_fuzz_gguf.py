"""The GGUF fuzzer's fixed cases and every file it ever caught: each loads and generates, or
fails with a typed smolgen error that names the file (``fuzz_gguf.judge``). Longer runs:
``make fuzz``."""

from __future__ import annotations

import pytest

import fuzz_gguf

# Cases per engine: a few seconds of fuzzing, always the same files.
CASES = {"auto": 6000, "candle": 1500}

REGRESSION_FILES = sorted(fuzz_gguf.REGRESSIONS.glob("*.gguf"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", sorted(CASES))
def test_fuzzed_gguf_files_load_or_fail_cleanly(tmp_path, engine):
    ran, failures = fuzz_gguf.run_cases(
        0, tmp_path, cases=CASES[engine], engine=None if engine == "auto" else engine
    )
    assert ran == CASES[engine]
    report = "\n".join(f"case {f.name}: {f.why}" for f in failures[:10])
    assert not failures, f"{len(failures)} of {ran} cases failed:\n{report}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", sorted(CASES))
def test_every_saved_regression_loads_or_fails_cleanly(engine):
    assert REGRESSION_FILES, "tests/regressions/ holds the files the fuzzer has caught"
    bad = fuzz_gguf.replay(REGRESSION_FILES, engine=None if engine == "auto" else engine)
    assert not bad, "\n".join(f"{path.name}: {why}" for path, why in bad)


def test_cases_are_the_same_on_every_run(tmp_path):
    bases = fuzz_gguf.base_files(tmp_path / "bases")
    first = [fuzz_gguf.make_case(0, i, bases) for i in range(20)]
    again = [fuzz_gguf.make_case(0, i, bases) for i in range(20)]
    assert first == again
    assert len({data for _, data in first}) == 20


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
        assert fuzz_gguf.judge(o, path) is None, o
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
        assert fuzz_gguf.judge(o, path) is not None, o
