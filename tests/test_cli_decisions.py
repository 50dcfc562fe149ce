"""``smolgen tokens``, ``smolgen cost`` and ``smolgen decide``, run in-process."""

from __future__ import annotations

import io
import json
import sys

import pytest

from smolgen.cli import main


def run(capsys, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    """Run ``smolgen ARGV`` and return (exit code, stdout, stderr)."""
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)  # not a TTY: no questions unless --interactive
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str, stdin: str = "") -> dict:
    code, out, err = run(capsys, *argv, "--json", stdin=stdin)
    assert code == 0, err
    return json.loads(out)


WORKLOAD = ("--requests-per-day", "5000", "--input-tokens", "2000", "--output-tokens", "500")


# ----------------------------------------------------------------------------------------------
# smolgen cost
# ----------------------------------------------------------------------------------------------


def test_cost_api_worked_example_json(capsys):
    doc = run_json(capsys, "cost", "api", *WORKLOAD, "--model", "gpt-4o")
    (est,) = doc["estimates"]
    assert (est["daily_cost"], est["monthly_cost"], est["cost_per_request"]) == (50, 1500, 0.01)
    assert est["inputs"]["days_per_month"] == 30


def test_cost_api_worked_example_table(capsys):
    code, out, _ = run(capsys, "cost", "api", *WORKLOAD, "-m", "gpt-4o", "-m", "gpt-4o-mini")
    assert code == 0
    for figure in ("$50.00", "$1,500.00", "$0.01", "$90.00"):
        assert figure in out


def test_cost_api_own_prices(capsys):
    doc = run_json(
        capsys, "cost", "api", *WORKLOAD, "--input-price", "2.50", "--output-price", "10"
    )
    assert doc["estimates"][0]["monthly_cost"] == 1500
    doc = run_json(capsys, "cost", "api", *WORKLOAD, "-m", "gpt-4o", "--days-per-month", "31")
    assert doc["estimates"][0]["monthly_cost"] == 1550


def test_cost_api_bad_arguments(capsys):
    code, _, _ = run(capsys, "cost", "api", *WORKLOAD, "--input-price", "2.50")
    assert code == 2
    code, _, _ = run(
        capsys, "cost", "api", "-r", "lots", "--input-tokens", "1", "--output-tokens", "1"
    )
    assert code == 2
    code, _, _ = run(capsys, "cost", "api", *WORKLOAD, "-m", "no-such-model")
    assert code == 2


def test_cost_self_host_a100_json(capsys):
    doc = run_json(
        capsys,
        "cost",
        "self-host",
        "--gpu-hourly",
        "1.99",
        "--tokens-per-second",
        "200",
        "--vs",
        "gpt-4o",
        "--basis",
        "output",
    )
    hosted = doc["self_hosted"]
    assert round(hosted["cost_per_mtok"], 2) == 2.76
    assert hosted["daily_cost"] == 47.76
    assert hosted["tokens_per_hour"] == 720_000
    (be,) = doc["break_even"]
    assert be["tokens_per_day"] == 4_776_000
    assert be["feasible"] is True


def test_cost_self_host_gpt4o_mini_json(capsys):
    doc = run_json(capsys, "cost", "self-host", "--gpu-hourly", "0.40", "--vs", "gpt-4o-mini")
    assert doc["break_even"][0]["tokens_per_day"] == 16_000_000
    assert doc["self_hosted"]["cost_per_mtok"] is None


def test_cost_self_host_table(capsys):
    code, out, _ = run(
        capsys, "cost", "self-host", "--gpu", "a100-80gb", "--vs", "gpt-4o", *WORKLOAD
    )
    assert code == 0
    for figure in ("$2.76", "$47.76", "$1,432.80", "4,776", "$1,500.00"):
        assert figure in out


def test_cost_self_host_needs_a_price(capsys):
    code, _, _ = run(capsys, "cost", "self-host", "--tokens-per-second", "200")
    assert code == 2


def test_cost_prices(capsys):
    doc = run_json(capsys, "cost", "prices")
    models = {m["model"] for m in doc["models"]}
    assert {"gpt-4o", "gpt-4o-mini", "claude-3-5-haiku", "gemini-1.5-pro"} <= models
    assert all(m["as_of"] and m["source"] for m in doc["models"])
    code, out, _ = run(capsys, "cost", "prices")
    assert code == 0 and "gpt-4o" in out and "a100-80gb" in out


def test_cost_without_a_subcommand_shows_help(capsys):
    code, out, _ = run(capsys, "cost")
    assert code == 2
    assert "self-host" in out


# ----------------------------------------------------------------------------------------------
# smolgen decide
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "outcome"),
    [
        (["--pii"], "self_host"),
        (["--no-pii", "--calls-per-day", "150000"], "consider_self_host"),
        (["--no-pii", "--calls-per-day", "5000", "--latency-ms", "80"], "self_host_small"),
        (
            ["--calls-per-day", "5000", "--narrow-domain", "--training-data", "--general"],
            "self_host_finetune",
        ),
        (["--no-pii", "--calls-per-day", "5000", "--no-narrow-domain", "--general"], "api"),
        (["--calls-per-day", "5000", "--no-general"], "consider_self_host"),
    ],
)
def test_decide_branches(capsys, flags, outcome):
    doc = run_json(capsys, "decide", *flags)
    assert doc["outcome"] == outcome
    assert doc["path"] and doc["checklist"]


def test_decide_with_prices_agrees_with_cost(capsys):
    flags = ["--calls-per-day", "3000", "--general", "--model", "gpt-4o"]
    flags += ["--input-tokens", "2000", "--output-tokens", "500", "--gpu", "a100-80gb"]
    doc = run_json(capsys, "decide", *flags)
    assert doc["verdict"] == "api"
    assert doc["break_even"]["requests_per_day"] == 4776
    flips = {f["field"]: f for f in doc["flips"]}
    assert flips["calls_per_day"]["new"] == 4777
    assert flips["calls_per_day"]["verdict"] == "consider_self_host"


def test_decide_table(capsys):
    code, out, _ = run(capsys, "decide", "--no-pii", "--calls-per-day", "5000", "--general")
    assert code == 0
    for text in ("Use an API", "Path taken", "Rule of thumb", "Next steps", "flip"):
        assert text in out


def test_decide_without_flags_or_terminal_does_not_ask(capsys):
    doc = run_json(capsys, "decide")
    assert doc["outcome"] == "consider_self_host"  # nothing given: every answer counts as no
    # every answer but the optional latency budget (none is an answer) is marked not given
    assert [s["given"] for s in doc["path"]] == [False, False, True, False, False]


def test_decide_interactive(capsys):
    # pii, calls, API model (blank: no pricing), latency (blank), narrow, training data, general
    answers = "n\n5000\n\n\nn\nn\ny\n"
    code, out, err = run(capsys, "decide", "--interactive", "--json", stdin=answers)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["outcome"] == "api"
    assert doc["inputs"]["calls_per_day"] == 5000
    assert doc["inputs"]["pii_must_stay"] is False
    assert "PII" in err  # the questions go to standard error, the JSON to standard output


def test_decide_bad_number(capsys):
    code, _, _ = run(capsys, "decide", "--calls-per-day", "many")
    assert code == 2


# ----------------------------------------------------------------------------------------------
# smolgen tokens
# ----------------------------------------------------------------------------------------------


def test_tokens_json(capsys):
    doc = run_json(
        capsys, "tokens", "Hello, world! This is a test.", "--tokenizer", "cl100k_base,o200k_base"
    )
    ids = {r["tokenizer"]: r["ids"] for r in doc["results"]}
    assert ids["cl100k_base"] == [9906, 11, 1917, 0, 1115, 374, 264, 1296, 13]
    assert ids["o200k_base"] == [13225, 11, 2375, 0, 1328, 382, 261, 1746, 13]


def test_tokens_table(capsys):
    code, out, _ = run(capsys, "tokens", "Can I get a refund?", "--tokenizer", "cl100k_base")
    assert code == 0
    assert "cl100k_base" in out and " refund" in out


def test_tokens_from_stdin_and_file(capsys, tmp_path):
    doc = run_json(capsys, "tokens", "-", "--tokenizer", "cl100k_base", stdin="Can I get a refund?")
    assert doc["results"][0]["n_tokens"] == 6
    path = tmp_path / "prompt.txt"
    path.write_text("Can I get a refund?", encoding="utf-8")
    doc = run_json(
        capsys, "tokens", "--file", str(path), "--tokenizer", "cl100k_base", "--no-pieces"
    )
    assert doc["results"][0]["n_tokens"] == 6
    assert "pieces" not in doc["results"][0]


def test_tokens_languages(capsys):
    doc = run_json(capsys, "tokens", "--languages", "--tokenizer", "cl100k_base")
    rows = {r["language"]: r for r in doc["rows"]}
    assert rows["en"]["relative_cost"] == 1
    assert rows["ko"]["relative_cost"] > 1.5
    code, out, _ = run(capsys, "tokens", "--languages", "--tokenizer", "cl100k_base")
    assert code == 0 and "Korean" in out and "len(text)/4" in out


def test_tokens_needs_a_text(capsys):
    code, _, _ = run(capsys, "tokens", "--tokenizer", "cl100k_base")
    assert code == 2
    code, _, _ = run(capsys, "tokens", "x", "--tokenizer", "no-such-tokenizer")
    assert code == 2


def test_tokens_smollm2_from_the_model_file(capsys, smollm2_gguf):
    doc = run_json(capsys, "tokens", "Can I get a refund?", "--tokenizer", str(smollm2_gguf))
    assert doc["results"][0]["n_tokens"] == 6


# ----------------------------------------------------------------------------------------------
# Help
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["tokens", "--help"], "--languages"),
        (["cost", "--help"], "break-even"),
        (["cost", "api", "--help"], "$1,500.00"),
        (["cost", "self-host", "--help"], "utilisation"),
        (["decide", "--help"], "--calls-per-day"),
    ],
)
def test_help(capsys, argv, text):
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert text in out


def test_cost_self_host_plot_without_a_volume(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "cost.png"
    code, out, err = run(
        capsys,
        "cost", "self-host", "--gpu-hourly", "1.99", "--tokens-per-second", "200",
        "--vs", "gpt-4o", "--plot", str(png),
    )  # fmt: skip
    assert code == 0, err
    assert png.stat().st_size > 10_000
    assert "4.78M" in out


def test_cost_batch_from_a_batch_summary(capsys, tmp_path):
    summary = tmp_path / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "succeeded": 64,
                "prompt_tokens": 2560,
                "completion_tokens": 2560,
                "completion_tokens_per_s": 600.0,
            }
        )
    )
    doc = run_json(
        capsys, "cost", "batch", "--requests", "1,000,000", "--from-summary", str(summary),
        "--node-hourly", "0.10", "--vs", "gpt-4o-mini",
    )  # fmt: skip
    assert (doc["input_tokens"], doc["output_tokens"], doc["tokens_per_second"]) == (40, 40, 600)
    assert doc["nodes"] == 1 and round(doc["cost_usd"], 2) == 1.85
    assert doc["vs"][0]["model"] == "gpt-4o-mini"
    # A flag wins over the summary; a missing number is named.
    doc = run_json(
        capsys, "cost", "batch", "--requests", "1e6", "--from-summary", str(summary),
        "--tokens-per-second", "300", "--node-hourly", "0.10", "--hours", "4",
    )  # fmt: skip
    assert doc["tokens_per_second"] == 300 and doc["nodes"] == 10
    code, out, err = run(capsys, "cost", "batch", "--requests", "10", "--node-hourly", "1")
    assert code == 2 and "--input-tokens" in err
    summary.write_text("{}")
    code, _, err = run(
        capsys, "cost", "batch", "--requests", "10", "--node-hourly", "1",
        "--from-summary", str(summary),
    )  # fmt: skip
    assert code == 2 and "not a 'smolgen batch --json' summary" in err
    code, out, _ = run(capsys, "cost", "batch", "--requests", "1e6", "--input-tokens", "80",
                       "--output-tokens", "40", "--tokens-per-second", "600",
                       "--node-hourly", "0.10")  # fmt: skip
    assert code == 0 and "18.5 node-hours: 1 node finishes in 18.5 h" in out
