"""The safetensors fuzzer's fixed cases and every directory it ever caught: each loads and
generates, or fails with a typed smolgen error that names the directory or a file in it
(``fuzz_driver.judge``). Longer runs: ``make fuzz``."""

from __future__ import annotations

import pytest

import fuzz_driver
import fuzz_safetensors
import smolgen

# Cases per engine: a few seconds of fuzzing, always the same directories.
CASES = {"auto": 4000, "candle": 1500}

REGRESSION_DIRS = fuzz_safetensors.saved_cases()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", sorted(CASES))
def test_fuzzed_directories_load_or_fail_cleanly(tmp_path, engine):
    fuzz_driver.check_cases(fuzz_safetensors.FORMAT, tmp_path, CASES[engine], engine)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", sorted(CASES))
def test_every_saved_regression_loads_or_fails_cleanly(engine):
    assert REGRESSION_DIRS, "tests/regressions/safetensors/ holds the directories caught"
    fuzz_driver.check_replay(REGRESSION_DIRS, engine)


def test_cases_are_the_same_on_every_run(tmp_path):
    fuzz_driver.check_cases_repeat(fuzz_safetensors.FORMAT, tmp_path)


def test_the_parts_of_a_valid_directory_write_back_to_the_same_files(tmp_path):
    for label, d in fuzz_safetensors.base_dirs(tmp_path / "bases"):
        files, _ = fuzz_safetensors.serialize(d)
        on_disk = fuzz_safetensors.read_dir(tmp_path / "bases" / label)
        assert {name: bytes(data) for name, data in files.items()} == on_disk, label


def test_the_valid_bases_load_and_generate(tmp_path):
    bases = fuzz_safetensors.base_dirs(tmp_path / "bases")
    dtypes, untied, sharded = set(), 0, 0
    for label, d in bases:
        names = {t.name for s in d.shards.values() for t in s.tensors}
        dtypes |= {t.dtype for s in d.shards.values() for t in s.tensors}
        untied += "lm_head.weight" in names
        sharded += fuzz_safetensors.INDEX in d.json and len(d.shards) > 1
        model = smolgen.load(tmp_path / "bases" / label, threads=2)
        assert model.info["format"] == "safetensors", label
        out = model.generate("hi there 42", max_tokens=2, temperature=0)
        assert out.usage.completion_tokens == 2, label
    assert dtypes == {"BF16", "F16", "F32"}
    assert untied and untied < len(bases) and sharded


def test_a_directory_is_named_by_its_path_or_a_path_inside_it(tmp_path):
    case = tmp_path / "case-0-3"
    case.mkdir()
    for message in (f"model not found: {case}", f"malformed model file {case}/config.json: x"):
        assert fuzz_driver.names_model(message, case), message
    for message in (f"malformed model file {case}1/config.json: x", "config.json: bad"):
        assert not fuzz_driver.names_model(message, case), message
    unnamed = {
        "stage": "load",
        "class": "MalformedModelError",
        "module": "smolgen.errors",
        "smolgen": True,
        "message": "config.json: bad",
    }
    assert fuzz_driver.judge(unnamed, case) is not None
    assert fuzz_driver.judge(dict(unnamed, message=f"{case}/tokenizer.json: bad"), case) is None
