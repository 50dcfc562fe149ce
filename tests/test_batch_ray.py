"""Batch jobs on a Ray cluster this test starts on loopback (2 CPUs): `smolgen batch --ray`
writes the same records as the single-process run, and `smolgen.ray.Generator` works as a
`map_batches` class over a dataset of plain prompts."""

from __future__ import annotations

import json

import pytest

import smolgen
from smolgen.cli import main

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("fastapi")

from test_batch import answer_text, by_id, chat_line, read_records, write_lines  # noqa: E402

# Ray's own deprecation notices about its own settings are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_file_job_on_ray_writes_what_one_process_writes(cluster, smollm2, smollm2_gguf, tmp_path):
    lines = [chat_line(f"q{i}", f"Name {i + 1} fruits.", 6) for i in range(10)]
    lines += ["not json", chat_line("bad", "x", messages=7)]
    src = write_lines(tmp_path / "in.jsonl", lines)
    reference = by_id(list(smolgen.batch(smollm2, lines)))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(src), str(out), "-m", str(smollm2_gguf), "--json"]
    args += ["--ray", "local", "--ray-actors", "2", "--threads", "1", "--model-id", "smollm2"]
    assert main(args) == 0
    records = by_id(read_records(out))
    assert set(records) == set(reference)
    for custom_id, record in records.items():
        assert set(record) == {"id", "custom_id", "response", "error"}
        if record["response"] is None or record["response"]["status_code"] != 200:
            assert record["error"] == reference[custom_id]["error"]
            assert (record["response"] or {}).get("body") == (
                reference[custom_id]["response"] or {}
            ).get("body")
        else:
            assert answer_text(record) == answer_text(reference[custom_id])
            assert record["response"]["body"]["model"] == "smollm2"
    # Resumed: nothing left to send.
    assert main(args) == 0
    assert len(read_records(out)) == len(lines)


def test_the_generator_class_maps_a_dataset_of_plain_prompts(cluster, smollm2, smollm2_gguf):
    from smolgen.ray import Generator, record_of

    rows = [{"id": f"r{i}", "text": f"Say {i}."} for i in range(6)] + [{"id": "r6", "text": ""}]
    settings = {"max_tokens": 4, "temperature": 0}
    dataset = ray.data.from_items(rows).map_batches(
        Generator,
        fn_constructor_kwargs={
            "model": str(smollm2_gguf),
            "prompt_field": "text",
            "id_field": "id",
            "settings": settings,
        },
        concurrency=1,
        num_cpus=2,
        batch_size=4,
    )
    records = by_id([record_of(row) for row in dataset.iter_rows()])
    assert sorted(records) == [f"r{i}" for i in range(7)]
    assert "empty" in records["r6"]["error"]["message"]
    for i in range(6):
        ids = smollm2.chat_prompt([{"role": "user", "content": f"Say {i}."}])
        expected = smollm2.generate(ids, **settings).text
        assert answer_text(records[f"r{i}"]) == [expected]
        assert json.loads(json.dumps(records[f"r{i}"]))  # plain JSON all through


def test_the_readme_ray_example_runs(cluster, tmp_path, monkeypatch):
    """The README's Ray Data block, over a Parquet file of its own, with the default model."""
    from pathlib import Path

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("**Past one machine: Ray.**", 1)[1].split("```python\n", 1)[1]
    # Sized for a cluster; on this 2-CPU one, one actor of one CPU
    block = block.split("```", 1)[0].replace("concurrency=4", "concurrency=1")
    block = block.replace("num_cpus=2", "num_cpus=1")  # and a CPU left for the read
    # Ray's workers do not share this process's directory.
    block = block.replace('"reviews.parquet"', repr(str(tmp_path / "reviews.parquet")))
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["Great!", "Terrible."]}), "reviews.parquet")
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    from smolgen.ray import record_of

    records = by_id([record_of(row) for row in scope["answers"].iter_rows()])
    assert sorted(records) == ["a", "b"]
    assert all(r["response"]["status_code"] == 200 for r in records.values())
