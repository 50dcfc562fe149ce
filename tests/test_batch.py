"""Batch jobs (`smolgen batch`, `smolgen.batch`): OpenAI's batch file format in and out, the
answers the server would give, bad lines answered without stopping the job, and a job that
is killed at any moment and started again losing and repeating nothing."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import smolgen
from smolgen.batches import resume_point, run_batch_file
from smolgen.cli import main

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

CHAT = "/v1/chat/completions"


def chat_line(custom_id: str, text: str, max_tokens: int = 8, **body) -> dict:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **body}
    body.setdefault("temperature", 0)
    body["max_tokens"] = max_tokens
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_id(records: list[dict]) -> dict[str, dict]:
    out = {r["custom_id"]: r for r in records}
    assert len(out) == len(records), "a custom_id was answered twice"
    return out


def answer_text(record: dict) -> list[str]:
    body = record["response"]["body"]
    return [c["message"]["content"] if "message" in c else c["text"] for c in body["choices"]]


MIXED = [
    chat_line("chat", "What is 2+2?"),
    {
        "custom_id": "text",
        "method": "POST",
        "url": "/v1/completions",
        "body": {
            "model": "x",
            "prompt": "The capital of France is",
            "max_tokens": 6,
            "temperature": 0,
        },
    },
    "this line is not JSON",
    {"custom_id": "get", "method": "GET", "url": CHAT, "body": {}},
    {"custom_id": "embed", "method": "POST", "url": "/v1/embeddings", "body": {}},
    chat_line("bad-body", "hi", messages="not a list"),
    chat_line("streamed", "hi", stream=True),
    chat_line("two", "Name a color.", max_tokens=5, n=2),
    chat_line("too-long", "word " * 9000),
]


def test_a_mixed_file_is_answered_line_by_line_as_openai_writes_batch_output(smollm2, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", MIXED)
    out = tmp_path / "out.jsonl"
    stats = run_batch_file(smollm2, src, out, model_id="smollm2", concurrency=4)
    records = by_id(read_records(out))
    assert set(records) == {
        "chat", "text", "line-3", "get", "embed", "bad-body", "streamed", "two", "too-long"
    }  # fmt: skip
    for r in records.values():
        assert set(r) == {"id", "custom_id", "response", "error"}
        assert r["id"].startswith("batch_req_")
        assert (r["response"] is None) != (r["error"] is None)
    # Answered: bodies the official client parses, naming the model that ran.
    chat = openai.types.chat.ChatCompletion.model_validate(records["chat"]["response"]["body"])
    assert records["chat"]["response"]["status_code"] == 200
    assert chat.model == "smollm2" and chat.usage.completion_tokens == 8
    ids = smollm2.chat_prompt([{"role": "user", "content": "What is 2+2?"}])
    assert (
        chat.choices[0].message.content == smollm2.generate(ids, max_tokens=8, temperature=0).text
    )
    text = openai.types.Completion.model_validate(records["text"]["response"]["body"])
    assert text.object == "text_completion" and text.usage.completion_tokens == 6
    assert len(answer_text(records["two"])) == 2
    # Not requests at all: an error, no response.
    for custom_id, word in [("line-3", "JSON"), ("get", "method"), ("embed", "url")]:
        assert records[custom_id]["error"]["code"] == "invalid_request"
        assert word in records[custom_id]["error"]["message"]
    # Requests the API refuses: its status and error body.
    for custom_id, param in [("bad-body", "messages"), ("streamed", "stream")]:
        response = records[custom_id]["response"]
        assert response["status_code"] == 400
        assert response["body"]["error"]["param"] == param
    assert records["too-long"]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert (stats.requests, stats.succeeded, stats.failed, stats.skipped) == (9, 3, 6, 0)
    answered = [r for r in records.values() if r["error"] is None]
    assert stats.completion_tokens == sum(
        r["response"]["body"].get("usage", {}).get("completion_tokens", 0) for r in answered
    )
    # Run again: everything is answered already.
    again = run_batch_file(smollm2, src, out, model_id="smollm2")
    assert (again.requests, again.skipped) == (0, 9)
    assert len(read_records(out)) == 9


def test_the_python_api_yields_records_and_can_stop_early(smollm2):
    lines = [chat_line(f"r{i}", f"Count to {i}.", max_tokens=4) for i in range(6)]
    stats = smolgen.BatchStats()
    records = list(smolgen.batch(smollm2, [json.dumps(x) for x in lines], stats=stats))
    assert sorted(r["custom_id"] for r in records) == [f"r{i}" for i in range(6)]
    assert stats.succeeded == 6 and stats.completion_tokens == 24
    # Stopping the iteration cancels the rest, without hanging.
    first = next(iter(smolgen.batch(smollm2, lines, concurrency=2)))
    assert first["response"]["status_code"] == 200


def test_a_line_over_the_size_limit_is_answered_as_an_error_unread(smollm2, tmp_path, monkeypatch):
    monkeypatch.setattr(smolgen.prompt_rows, "MAX_LINE_BYTES", 1000)
    huge = chat_line("huge", "x" * 5000)
    src = write_lines(
        tmp_path / "in.jsonl", [chat_line("a", "Hi.", 2), huge, chat_line("b", "Hi.", 2)]
    )
    out = tmp_path / "out.jsonl"
    stats = run_batch_file(smollm2, src, out)
    records = by_id(read_records(out))
    assert sorted(records) == ["a", "b", "line-2"]
    assert "longer than 1000 bytes" in records["line-2"]["error"]["message"]
    assert stats.succeeded == 2


@pytest.mark.parametrize(
    "bad", [{"concurrency": 0}, {"max_tokens_default": 0}, {"concurrency": 2.5}]
)
def test_bad_job_settings_are_refused_before_anything_runs(smollm2, tmp_path, bad):
    with pytest.raises(smolgen.InvalidArgumentError, match="must be an integer >= 1"):
        smolgen.batch(smollm2, [chat_line("a", "x")], **bad)
    src = write_lines(tmp_path / "in.jsonl", [chat_line("a", "x")])
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"torn")
    with pytest.raises(smolgen.InvalidArgumentError, match="must be an integer >= 1"):
        run_batch_file(smollm2, src, out, **bad)
    assert out.read_bytes() == b"torn"  # not touched


def test_a_file_with_a_repeated_custom_id_is_refused_before_anything_runs(smollm2, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [chat_line("a", "x"), chat_line("a", "y")])
    out = tmp_path / "out.jsonl"
    with pytest.raises(smolgen.InvalidArgumentError, match="lines 1 and 2 share"):
        run_batch_file(smollm2, src, out)
    assert not out.exists()


def test_a_torn_last_line_is_cut_and_only_the_rest_runs(smollm2, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [chat_line(f"r{i}", "Hi.", 3) for i in range(4)])
    out = tmp_path / "out.jsonl"
    run_batch_file(smollm2, src, out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    assert resume_point(out) == {json.loads(x)["custom_id"] for x in lines[:2]}
    stats = run_batch_file(smollm2, src, out)
    assert (stats.requests, stats.skipped) == (2, 2)
    assert sorted(by_id(read_records(out))) == ["r0", "r1", "r2", "r3"]


def test_an_output_file_that_is_not_an_earlier_runs_is_left_alone(smollm2, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [chat_line("a", "x")])
    out = tmp_path / "out.jsonl"
    out.write_text("precious data\nmore\n")
    with pytest.raises(smolgen.InvalidArgumentError, match="not a batch output record"):
        run_batch_file(smollm2, src, out)
    assert out.read_text() == "precious data\nmore\n"


def test_killed_twenty_times_at_random_moments_the_job_loses_and_repeats_nothing(
    smollm2, smollm2_gguf, tmp_path
):
    prompts = ["Name a fruit.", "Say hello.", "What is the sea?", "Count to five."]
    lines = [chat_line(f"q{i}", prompts[i % 4] + " " * (i // 4), 24) for i in range(240)]
    lines.insert(5, "garbage line")
    src = write_lines(tmp_path / "in.jsonl", lines)
    reference = by_id(list(smolgen.batch(smollm2, lines, concurrency=4)))

    out, log = tmp_path / "out.jsonl", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "smolgen", "batch", str(src), str(out)]
    command += ["-m", str(smollm2_gguf), "--concurrency", "4"]
    # Kills land from the moment a run could have answered its first requests, whatever this
    # machine's speed: after the time one run of one request takes.
    warm = tmp_path / "one.jsonl"
    write_lines(warm, lines[:1])
    started = time.perf_counter()
    subprocess.run([*command[:4], str(warm), str(tmp_path / "one.out"), *command[6:]], check=True)
    first = time.perf_counter() - started
    rng = random.Random(0)
    answered_at_kills = []
    while len(answered_at_kills) < 20:
        with open(log, "wb") as err:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
            try:
                proc.wait(timeout=first + rng.uniform(0, 0.4))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                answered_at_kills.append(out.read_bytes().count(b"\n") if out.exists() else 0)
                continue
        assert proc.returncode == 0, log.read_text()
        pytest.fail(f"the job finished after {len(answered_at_kills)} kills: make it longer")
    finished = subprocess.run(command, capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr.decode()
    assert sum(0 < n < len(lines) for n in answered_at_kills) >= 10, answered_at_kills
    records = by_id(read_records(out))
    assert set(records) == set(reference)
    for custom_id, record in records.items():
        if record["response"] is None:
            assert record["error"] == reference[custom_id]["error"]
        else:
            assert answer_text(record) == answer_text(reference[custom_id])


def test_cli_summary_with_a_price_comparison(smollm2_gguf, tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", [chat_line("a", "Hi.", 4), "{}"])
    out = tmp_path / "out.jsonl"
    args = ["batch", str(src), str(out), "-m", str(smollm2_gguf), "--json"]
    assert main([*args, "--compare", "gpt-4o-mini"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["requests"], summary["succeeded"], summary["failed"]) == (2, 1, 1)
    assert summary["completion_tokens"] == 4
    assert summary["compare"]["model"] == "gpt-4o-mini"
    assert 0 < summary["compare"]["api_cost_usd"] < 0.001
    assert "2 requests to run" in captured.err
    assert main([*args, "--compare", "no-such-model"]) == 2
    assert main(["batch", str(tmp_path / "missing.jsonl"), str(out), "--json"]) == 2


def test_progress_is_reported_on_a_long_job(smollm2, tmp_path):
    """Every record reaches the callback with the running totals, in completion order."""
    src = write_lines(tmp_path / "in.jsonl", [chat_line(f"r{i}", "Hi.", 2) for i in range(5)])
    seen: list[tuple[str, int]] = []
    started: list[tuple[int, int]] = []
    run_batch_file(
        smollm2,
        src,
        tmp_path / "out.jsonl",
        on_start=lambda todo, done: started.append((todo, done)),
        on_record=lambda record, stats: seen.append((record["custom_id"], stats.requests)),
    )
    assert started == [(5, 0)]
    assert [n for _, n in seen] == [1, 2, 3, 4, 5]
    assert sorted(custom_id for custom_id, _ in seen) == [f"r{i}" for i in range(5)]


def test_requests_sharing_a_system_prompt_reuse_it_from_the_prefix_cache(smollm2):
    system = "You are a careful assistant who answers in one short sentence. " * 8
    lines = [chat_line(f"r{i}", "", 3) for i in range(12)]
    for i, line in enumerate(lines):
        line["body"]["messages"] = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Question {i}: name a color."},
        ]
    records = list(smolgen.batch(smollm2, lines, concurrency=4))
    cached = [
        r["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"] for r in records
    ]
    system_tokens = len(smollm2.tokenize(system))
    # The first requests run before any has finished; every later one finds the system prompt.
    assert sum(c >= system_tokens for c in cached) >= 12 - 4, cached


def test_the_readme_batch_example_runs(smollm2_gguf, tmp_path):
    """The README's batch block, as a user pastes it (the default model, from the cache)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Batch jobs", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    script = block.replace("\nsmolgen ", f"\n{sys.executable} -m smolgen ")
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["requests"], summary["succeeded"]) == (2, 2)
    assert summary["compare"]["model"] == "gpt-4o-mini"
    records = by_id(read_records(tmp_path / "answers.jsonl"))
    assert sorted(records) == ["q1", "q2"]
    # The plain-prompt example, over a CSV of its own.
    (tmp_path / "reviews.csv").write_text("id,text\nr1,Loved it.\nr2,Broke in a day.\n")
    block = section.split("```bash\n", 2)[2].split("```", 1)[0]
    script = block.replace("smolgen ", f"{sys.executable} -m smolgen ", 1)
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    records = by_id(read_records(tmp_path / "answers.jsonl"))
    assert sorted(records) == ["q1", "q2", "r1", "r2"]
    assert records["r1"]["response"]["body"]["usage"]["completion_tokens"] <= 3


# --- plain prompts ------------------------------------------------------------------------------


def plain_answers(model, src: Path, out: Path, **options) -> dict[str, dict]:
    run_batch_file(model, src, out, settings={"max_tokens": 4, "temperature": 0}, **options)
    return by_id(read_records(out))


def test_a_csv_column_of_prompts_runs_as_chat_requests(smollm2, tmp_path):
    src = tmp_path / "reviews.csv"
    src.write_text('id,text\nr1,"Loved it, truly."\nr2,Awful.\nr3,\n', encoding="utf-8")
    records = plain_answers(
        smollm2, src, tmp_path / "out.jsonl", prompt_field="text", id_field="id", system="Be terse."
    )
    assert sorted(records) == ["r1", "r2", "r3"]
    ids = smollm2.chat_prompt(
        [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Loved it, truly."},
        ]
    )
    assert answer_text(records["r1"]) == [smollm2.generate(ids, max_tokens=4, temperature=0).text]
    assert "prompt is empty" in records["r3"]["error"]["message"]  # an empty cell


def test_jsonl_rows_without_their_prompt_are_errors_and_the_rest_runs(smollm2, tmp_path):
    src = write_lines(
        tmp_path / "rows.jsonl",
        [{"text": "Hi."}, {"other": 1}, {"text": 7}, "not json", {"text": "Bye."}],
    )
    records = plain_answers(smollm2, src, tmp_path / "out.jsonl", prompt_field="text")
    assert sorted(records) == [f"row-{n}" for n in range(1, 6)]
    assert records["row-1"]["response"]["status_code"] == 200
    assert "no prompt" in records["row-2"]["error"]["message"]
    assert "int, not a text" in records["row-3"]["error"]["message"]
    assert "not JSON" in records["row-4"]["error"]["message"]
    assert records["row-5"]["response"]["status_code"] == 200


def test_parquet_rows_run_and_resume_by_row_number(smollm2, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": ["Hi.", None, "Name a fruit."], "n": [1, 2, 3]}), src)
    out = tmp_path / "out.jsonl"
    records = plain_answers(smollm2, src, out, prompt_field="text")
    assert sorted(records) == ["row-1", "row-2", "row-3"]
    assert records["row-2"]["error"] is not None
    again = run_batch_file(smollm2, src, out, prompt_field="text")
    assert (again.requests, again.skipped) == (0, 3)


def test_plain_prompt_files_are_checked_before_anything_runs(smollm2, tmp_path):
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("id,body\n1,x\n")
    with pytest.raises(smolgen.InvalidArgumentError, match="no column 'text'; the columns are id"):
        run_batch_file(smollm2, csv_file, tmp_path / "o.jsonl", prompt_field="text")
    txt = tmp_path / "a.txt"
    txt.write_text("x\n")
    with pytest.raises(smolgen.InvalidArgumentError, match="by suffix"):
        run_batch_file(smollm2, txt, tmp_path / "o.jsonl", prompt_field="text")
    not_parquet = tmp_path / "b.parquet"
    not_parquet.write_bytes(b"PAR1 nope")
    pytest.importorskip("pyarrow")
    with pytest.raises(smolgen.InvalidArgumentError, match="not a readable Parquet file"):
        run_batch_file(smollm2, not_parquet, tmp_path / "o.jsonl", prompt_field="text")
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_settings_are_for_plain_prompts_only(smollm2_gguf, tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", [chat_line("a", "Hi.", 2)])
    out = tmp_path / "out.jsonl"
    assert main(["batch", str(src), str(out), "-m", str(smollm2_gguf), "-t", "0"]) == 2
    assert "for plain prompts" in capsys.readouterr().err
    rows = write_lines(tmp_path / "rows.jsonl", [{"q": "Hi."}, {"q": "Bye."}])
    args = ["batch", str(rows), str(out), "-m", str(smollm2_gguf), "--prompt-field", "q"]
    assert main([*args, "-t", "0", "--max-tokens-default", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["succeeded"], summary["completion_tokens"]) == (2, 6)


def test_structured_output_and_tool_calls_run_in_a_batch_as_through_the_server(smollm2):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    lines = [
        chat_line("json", "Invent a person.", max_tokens=60, response_format=fmt),
        chat_line("tool", "Weather in Rome?", max_tokens=60, tools=[weather],
                  tool_choice="required"),
        chat_line("legacy", "Hi", functions=[{"name": "f"}]),
    ]  # fmt: skip
    records = by_id(list(smolgen.batch(smollm2, [json.dumps(x) for x in lines])))
    person = json.loads(records["json"]["response"]["body"]["choices"][0]["message"]["content"])
    assert set(person) == {"name", "age"}
    choice = records["tool"]["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert records["legacy"]["response"]["status_code"] == 400  # refused, as the server does
