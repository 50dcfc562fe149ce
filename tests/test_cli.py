"""The ``smolgen`` command as a user runs it: a separate process, real exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smolgen.cli import build_parser, main


def smolgen(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smolgen", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_generate_streams_and_summarises(smollm2_gguf):
    r = smolgen(
        "generate",
        "Once upon a time",
        "-m",
        str(smollm2_gguf),
        "--max-tokens",
        "12",
        "--temperature",
        "0.7",
        "--seed",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 10
    assert "12 tokens" in r.stderr and "TTFT" in r.stderr and "tok/s" in r.stderr


def test_generate_json_is_reproducible(smollm2_gguf):
    args = (
        "generate",
        "Once upon a time",
        "-m",
        str(smollm2_gguf),
        "-n",
        "10",
        "--seed",
        "3",
        "--json",
    )
    a, b = smolgen(*args), smolgen(*args)
    assert a.returncode == 0, a.stderr
    ra, rb = json.loads(a.stdout), json.loads(b.stdout)
    assert ra["token_ids"] == rb["token_ids"]
    assert ra["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 10,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert ra["finish_reason"] == "length"
    assert set(ra["timings"]) >= {"prefill_s", "ttft_s", "decode_s", "decode_tokens_per_s"}


def test_info_json(smollm2_gguf):
    r = smolgen("info", str(smollm2_gguf), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["parameters"] == 134_515_008
    assert info["weight_types"]["token_embd"] == "Q8_0"


def test_quantize_at_load_from_the_command_line(tiny_dir):
    """Every model command takes --quantize for safetensors, as smolgen.load does."""
    r = smolgen("info", str(tiny_dir), "--quantize", "q8_0", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["weight_types"]["attn_q"] == "Q8_0" and info["engine"] != "candle"
    r = smolgen("info", str(tiny_dir), "--quantize", "q9_x")
    assert r.returncode == 2 and "q4_0" in r.stderr


def test_info_table(smollm2_gguf):
    r = smolgen("info", str(smollm2_gguf))
    assert r.returncode == 0, r.stderr
    assert "134,515,008" in r.stdout and "Q4_1" in r.stdout


def test_pull_uses_the_cache(smollm2_gguf):
    r = smolgen("pull", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == str(smollm2_gguf)


def test_exit_codes_by_error_class(tmp_path, smollm2_gguf):
    assert smolgen("generate", "hi", "-m", str(tmp_path / "missing.gguf")).returncode == 3
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nonsense")
    r = smolgen("generate", "hi", "-m", str(bad))
    assert r.returncode == 4 and "not a GGUF file" in r.stderr
    r = smolgen("generate", "hi", "-m", str(smollm2_gguf), "--temperature", "-1")
    assert r.returncode == 2 and "temperature" in r.stderr
    r = smolgen("generate", "hi", "-m", str(smollm2_gguf), "--max-tokens", "9000")
    assert r.returncode == 6 and "maximum context length is 8192 tokens" in r.stderr
    assert smolgen("pull", "not-an-alias").returncode == 3
    assert smolgen().returncode == 2


def test_help_everywhere():
    for command in ("generate", "pull", "info", "tokens", "cost", "decide"):
        r = smolgen(command, "--help")
        assert r.returncode == 0 and "usage" in r.stdout


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["genrate", "hi"], "(did you mean generate?)"),
        (["generate", "hi", "--temprature", "0.5"], "(did you mean --temperature?)"),
        (["generate", "hi", "--max-tokns=3"], "(did you mean --max-tokens?)"),
        (["generate", "hi", "--dtype", "f61"], "(did you mean f16?)"),
        # -t is the temperature wherever it is taken; `tokens` spells its tokenizer out.
        (["tokens", "hi", "-t", "cl100k_base"], "(did you mean --tokenizer?)"),
        (
            [
                "cost",
                "api",
                "-r",
                "5",
                "--input-tokens",
                "1",
                "--output-tokens",
                "1",
                "--modle",
                "x",
            ],
            "(did you mean --model?)",
        ),
    ],
)
def test_a_mistyped_command_or_option_gets_the_nearest_one(capsys, argv, hint):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert hint in err and "error:" in err


def test_a_short_flag_means_one_thing_in_every_command():
    """-m the model, -t the temperature, -n the tokens to generate, wherever they are taken."""
    meanings = {"-m": "--model", "-t": "--temperature", "-n": "--max-tokens", "-s": "--seed"}
    parser = build_parser()
    seen: dict[str, set[str]] = {}
    todo = [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
                continue
            short = [o for o in action.option_strings if len(o) == 2 and o != "-h"]
            long = [o for o in action.option_strings if o.startswith("--")]
            for flag in short:
                seen.setdefault(flag, set()).update(long[:1])
    for flag, names in seen.items():
        assert len(names) == 1, (flag, names)
        if flag in meanings:
            assert names == {meanings[flag]}, (flag, names)


def test_more_threads_than_cores_is_warned_about(tiny_gguf):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    r = smolgen("info", "-m", str(tiny_gguf), "--threads", str(cores + 1))
    assert r.returncode == 0
    assert f"--threads {cores + 1} is more than the {cores} cores" in r.stderr
    r = smolgen("info", "-m", str(tiny_gguf), "--threads", str(cores))
    assert r.returncode == 0 and "warning" not in r.stderr


def test_generate_show_probs_marks_unlikely_tokens(smollm2_gguf):
    r = smolgen("generate", "Once upon a time", "-m", str(smollm2_gguf), "-n", "12", "-t", "1",
                "--seed", "2", "--show-probs")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "%]" in r.stdout and "the token's probability" in r.stdout
    r = smolgen("generate", "Once upon a time", "-m", str(smollm2_gguf), "-n", "3", "--json")
    record = json.loads(r.stdout)
    assert [lp["id"] for lp in record["logprobs"]] == record["token_ids"]
    assert all(lp["logprob"] <= 0 for lp in record["logprobs"])
    assert record["kv_cache_bytes"] > 0


def test_commands_pass_on_only_the_settings_given_or_preset():
    """Every generating command reads the same sampling options; what is not given is not
    passed, so the core's defaults apply (max_tokens: 256 or what the context has left)."""
    from smolgen.cli import build_parser, sampling_options

    parser = build_parser()
    assert sampling_options(parser.parse_args(["generate", "hi"])) == {}
    given = parser.parse_args(["generate", "hi", "-t", "0", "--top-k", "5", "--stop", "a"])
    assert sampling_options(given) == {"temperature": 0.0, "top_k": 5, "stop": ["a"]}
    chat = sampling_options(parser.parse_args(["chat", "--presence-penalty", "0.5"]))
    assert chat == {
        "max_tokens": 512,
        "temperature": 0.7,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
    }
    sweep = parser.parse_args(["sweep", "hi", "--min-p", "0.1"])
    assert sampling_options(sweep) == {"max_tokens": 20, "seed": 0, "min_p": 0.1}
    assert not hasattr(sweep, "temperature")


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["generate", "hi", "--plot", "t.png"], "matplotlib", "plot"),
        (["peek", "hi", "--plot", "t.png"], "matplotlib", "plot"),
        (["batch", "in.jsonl", "out.jsonl", "--ray", "auto"], "ray", "ray"),
        (["batch", "in.parquet", "out.jsonl", "--prompt-field", "text"], "pyarrow", "parquet"),
        (["serve"], "uvicorn", "serve"),
        (["serve"], "fastapi_offline", "serve"),
    ],
)
def test_a_missing_extra_is_named_before_any_work(
    monkeypatch, capsys, tmp_path, argv, module, extra
):
    """Refused with the pip command before the model is even looked for (a missing model
    would be exit status 3), not after a generation."""
    monkeypatch.setitem(sys.modules, module, None)  # importing it fails, as when not installed
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "-m", str(tmp_path / "missing.gguf")]) == 2
    assert f"pip install 'smolgen[{extra}]'" in capsys.readouterr().err


def test_list_and_rm_manage_the_cache(monkeypatch, capsys, tmp_path):
    from smolgen.hub import ALIASES, DEFAULT_MODEL, cached_path

    monkeypatch.setenv("SMOLGEN_HOME", str(tmp_path))
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    alias = ALIASES[DEFAULT_MODEL]
    path = cached_path(alias)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:  # sparse: the pinned size without the bytes
        f.truncate(alias.size)
    path.with_name(path.name + ".sha256").write_text(alias.sha256)
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"alias": DEFAULT_MODEL, "bytes": alias.size, "path": str(path)}]
    assert main(["rm", "smollm2-135m-instuct"]) == 3  # a typo removes nothing
    assert "did you mean smollm2-135m-instruct?" in capsys.readouterr().err
    assert path.exists()
    assert main(["rm", DEFAULT_MODEL, "--json"]) == 0
    (gone,) = json.loads(capsys.readouterr().out)
    assert gone == {"alias": DEFAULT_MODEL, "path": str(path), "bytes": alias.size + 64}
    assert not path.parent.exists()
    assert main(["rm", DEFAULT_MODEL]) == 3
    assert "is not in the cache" in capsys.readouterr().err


def test_show_is_info(tiny_gguf, capsys):
    assert main(["show", str(tiny_gguf), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert main(["info", "-m", str(tiny_gguf), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == shown["parameters"]


def test_every_help_links_to_the_page_that_explains_it():
    """`--help` of smolgen and of each command ends with the address of a page of the site
    (`docs/`), or of the command's section of the command-line reference."""
    from smolgen.cli import DOCS_URL

    docs = Path(__file__).resolve().parent.parent / "docs"
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert f"docs: {DOCS_URL}" in parser.format_help()
    for name, command in commands.choices.items():
        match = re.search(r"docs:\s+(\S+)", command.format_help())
        assert match and match.group(1).startswith(DOCS_URL), name
        page, _, anchor = match.group(1).removeprefix(DOCS_URL).partition("#")
        source = docs / (page.rstrip("/") + ".md" if page else "index.md")
        assert source.is_file(), (name, match.group(1))
        if anchor:  # a section of the reference, one per command
            assert anchor.removeprefix("smolgen-") in commands.choices, (name, anchor)
