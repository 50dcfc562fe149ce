"""The cost model against hand-worked numbers, including the published figures that are wrong."""

from __future__ import annotations

import json
import sys
import types
from decimal import Decimal

import pytest

from smolgen.lab.cost import (
    ModelPrice,
    ThroughputUnavailableError,
    break_even,
    cost_curve,
    default_prices,
    estimate_monthly_cost,
    format_tokens,
    format_usd,
    load_prices,
    plot_cost_curve,
    request_cost,
    self_host_cost,
)

D = Decimal


# ----------------------------------------------------------------------------------------------
# API cost
# ----------------------------------------------------------------------------------------------


def test_worked_example_is_exact():
    # 5,000 requests/day x (2,000 in + 500 out) at $2.50 / $10.00 per 1M tokens
    est = estimate_monthly_cost(5000, 2000, 500, (2.50, 10.00))
    assert est.daily_cost == D("50.00")
    assert est.monthly_cost == D("1500.00")
    assert est.cost_per_request == D("0.01")
    assert (format_usd(est.daily_cost), format_usd(est.monthly_cost)) == ("$50.00", "$1,500.00")
    assert format_usd(est.cost_per_request) == "$0.01"
    assert est.input_cost_per_day == est.output_cost_per_day == D(25)
    assert (est.daily_input_tokens, est.daily_output_tokens) == (10_000_000, 2_500_000)


def test_worked_example_by_model_name():
    est = estimate_monthly_cost(5000, 2000, 500, "gpt-4o")
    assert (est.daily_cost, est.monthly_cost, est.cost_per_request) == (50, 1500, D("0.01"))
    assert est.price.source and est.price.as_of


def test_days_per_month_is_a_visible_parameter():
    est = estimate_monthly_cost(5000, 2000, 500, "gpt-4o", days_per_month=31)
    assert est.monthly_cost == D(1550)
    assert est.to_dict()["inputs"]["days_per_month"] == 31


def test_single_request_cost():
    # a 4,000-token prompt and a 1,000-token answer at $2.50 / $10.00
    assert request_cost(4000, 1000, (2.50, 10.00)) == D("0.02")
    assert request_cost(4000, 1000, "gpt-4o") == D("0.02")


def test_results_echo_their_inputs():
    doc = estimate_monthly_cost(5000, 2000, 500, "gpt-4o").to_dict()
    json.dumps(doc)
    assert doc["inputs"] == {
        "model": "gpt-4o",
        "requests_per_day": 5000,
        "avg_input_tokens": 2000,
        "avg_output_tokens": 500,
        "input_per_mtok": 2.5,
        "output_per_mtok": 10.0,
        "days_per_month": 30,
        "price_source": default_prices().model("gpt-4o").source,
        "price_as_of": "2026-04",
    }
    assert (doc["daily_cost"], doc["monthly_cost"], doc["cost_per_request"]) == (50, 1500, 0.01)


@pytest.mark.parametrize(
    ("requests", "inp", "out", "price"),
    [(-1, 10, 10, "gpt-4o"), (1, "x", 10, "gpt-4o"), (1, 10, float("nan"), "gpt-4o")],
)
def test_bad_numbers_are_argument_errors(requests, inp, out, price):
    with pytest.raises(ValueError):
        estimate_monthly_cost(requests, inp, out, price)


# ----------------------------------------------------------------------------------------------
# Price table
# ----------------------------------------------------------------------------------------------

SOURCE_PRICES = {
    "GPT-4o": ("2.50", "10.00", 128_000),
    "GPT-4o mini": ("0.15", "0.60", 128_000),
    "Claude 3.7 Sonnet": ("3.00", "15.00", 200_000),
    "Claude 3.5 Sonnet": ("3.00", "15.00", 200_000),
    "Claude 3.5 Haiku": ("0.80", "4.00", None),
    "Claude 3 Haiku": ("0.25", "1.25", None),
    "Gemini 1.5 Pro": ("1.25", "5.00", 2_000_000),
}


@pytest.mark.parametrize("name", sorted(SOURCE_PRICES))
def test_bundled_prices_match_the_source(name):
    price = default_prices().model(name)
    pin, pout, window = SOURCE_PRICES[name]
    assert (price.input_per_mtok, price.output_per_mtok) == (D(pin), D(pout))
    assert price.context_window == window
    assert price.source.startswith("https://")
    assert price.as_of == "2026-04"
    assert price.provider


def test_lookup_by_key_name_and_provider():
    table = default_prices()
    assert table.model("gpt-4o-mini") is table.model("GPT-4o mini")
    assert table.model("openai/gpt-4o") is table.model("gpt-4o")
    with pytest.raises(ValueError, match="did you mean"):
        table.model("gpt4o")


def test_gpu_presets():
    a100 = default_prices().gpu("a100-80gb")
    assert (a100.hourly, a100.tokens_per_second) == (D("1.99"), D(200))
    assert default_prices().gpu("rtx-4090").hourly == D("0.40")
    assert default_prices().gpu("p4d.24xlarge").hourly == D("32.77")
    assert default_prices().gpu("g5.2xlarge").hourly == D("1.21")


def test_own_price_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "model": "in-house",
                        "provider": "us",
                        "input": "1",
                        "output": 2,
                        "source": "contract",
                        "as_of": "2026-05-01",
                    }
                ]
            }
        )
    )
    table = load_prices(path)
    est = estimate_monthly_cost(1000, 1000, 1000, "in-house", price_table=table)
    assert est.daily_cost == D(3)
    assert est.price.source == "contract"


def test_litellm_price_file(tmp_path):
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(
        json.dumps(
            {
                "sample_spec": {
                    "max_tokens": "set to max_output_tokens if provider specifies it",
                    "input_cost_per_token": 0.0,
                    "output_cost_per_token": 0.0,
                    "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
                    "mode": "one of chat, embedding, completion, image_generation",
                },
                "gpt-4o": {
                    "max_tokens": 16384,
                    "max_input_tokens": 128000,
                    "max_output_tokens": 16384,
                    "input_cost_per_token": 2.5e-06,
                    "output_cost_per_token": 1e-05,
                    "litellm_provider": "openai",
                    "mode": "chat",
                },
                "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation"},
            }
        )
    )
    table = load_prices(path)
    assert set(table.models) == {"gpt-4o"}
    price = table.model("gpt-4o")
    assert (price.input_per_mtok, price.output_per_mtok) == (D("2.5"), D(10))
    assert price.context_window == 128000
    assert price.provider == "openai"
    assert price.as_of  # the file's date
    est = estimate_monthly_cost(5000, 2000, 500, "gpt-4o", price_table=table)
    assert (est.daily_cost, est.monthly_cost, est.cost_per_request) == (50, 1500, D("0.01"))


def test_unreadable_price_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_prices(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_prices(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ValueError, match="LiteLLM"):
        load_prices(other)


# ----------------------------------------------------------------------------------------------
# Self-hosting and break-even
# ----------------------------------------------------------------------------------------------


def test_a100_cost_per_million_tokens():
    # $1.99/h at 200 tok/s: 720K tokens/h, ~$0.0028 per 1K, ~$2.76 per 1M
    hosted = self_host_cost(1.99, 200)
    assert hosted.tokens_per_hour == 720_000
    assert round(hosted.cost_per_mtok, 2) == D("2.76")
    assert round(hosted.cost_per_mtok / 1000, 4) == D("0.0028")
    assert hosted.daily_cost == D("47.76")
    assert hosted.monthly_cost == D("1432.80")
    assert hosted.capacity_tokens_per_day == 17_280_000


def test_a100_break_even_against_gpt4o_output_tokens():
    be = break_even(self_host_cost(1.99, 200), "gpt-4o", basis="output")
    assert be.tokens_per_day == 4_776_000
    assert format_tokens(be.tokens_per_day) == "4.78M"
    assert be.feasible is True
    assert be.utilisation_needed == D(4_776_000) / D(17_280_000)


def test_the_articles_70k_tokens_a_day_is_off_by_about_70x():
    be = break_even(self_host_cost(1.99, 200), (2.50, 10.00), basis="output")
    article = 70_000
    assert 65 < be.tokens_per_day / article < 75


def test_the_articles_15k_tokens_a_day_against_gpt4o_mini_is_off_by_about_1000x():
    # $0.40/h for a 4090-class GPU, paid 24 h: $9.60/day against $0.60 per 1M output tokens
    hosted = self_host_cost(0.40)
    be = break_even(hosted, "gpt-4o-mini")
    assert hosted.daily_cost == D("9.60")
    assert be.basis == "output"
    assert be.tokens_per_day == 16_000_000
    assert 1000 < be.tokens_per_day / 15_000 < 1100
    # and to get there at all the GPU must sustain ~185 tokens/s around the clock
    assert round(be.min_tokens_per_second) == 185
    assert be.feasible is None  # no throughput given


def test_assumptions_change_the_answer():
    base = break_even(self_host_cost(1.99, 200), "gpt-4o", basis="output")
    half_day = break_even(self_host_cost(1.99, 200, hours_per_day=12), "gpt-4o", basis="output")
    assert half_day.tokens_per_day == base.tokens_per_day / 2
    half_busy = self_host_cost(1.99, 200, utilisation=0.5)
    assert half_busy.cost_per_mtok == self_host_cost(1.99, 200).cost_per_mtok * 2
    # counting the input tokens too makes each call dearer, so the API breaks even sooner
    per_call = break_even(
        self_host_cost(1.99, 200), "gpt-4o", avg_input_tokens=2000, avg_output_tokens=500
    )
    assert per_call.basis == "request"
    assert per_call.api_cost_per_request == D("0.01")
    assert per_call.requests_per_day == 4776
    assert per_call.tokens_per_day == 4776 * 500 < base.tokens_per_day


def test_break_even_does_not_depend_on_throughput():
    slow = break_even(self_host_cost(1.99, 20), "gpt-4o", basis="output")
    fast = break_even(self_host_cost(1.99, 2000), "gpt-4o", basis="output")
    assert slow.tokens_per_day == fast.tokens_per_day
    assert slow.feasible is False  # 20 tok/s cannot serve 4.78M tokens a day
    assert fast.feasible is True


def test_rule_of_thumb_calls_per_day():
    # 100K calls/day: self-hosting wins; 1K/day: the API wins (GPT-4o, 2,000 in + 500 out)
    be = break_even(
        self_host_cost(gpu="a100-80gb"), "gpt-4o", avg_input_tokens=2000, avg_output_tokens=500
    )
    low, high = cost_curve(be, [1_000, 100_000], per_request=True)
    assert low.api_monthly < low.self_host_monthly
    assert high.api_monthly > high.self_host_monthly
    assert high.gpus == 3  # 50M output tokens a day need three GPUs at 17.28M each
    assert high.api_monthly == D(30_000)


def test_cost_curve_crosses_at_the_break_even():
    be = break_even(self_host_cost(1.99, 200), "gpt-4o", basis="output")
    (point,) = cost_curve(be, [be.tokens_per_day])
    assert point.api_monthly == point.self_host_monthly == D("1432.80")
    points = cost_curve(be)
    assert len(points) == 61
    assert points[0].api_monthly == 0


def test_self_host_inputs_are_checked():
    with pytest.raises(ValueError, match="utilisation"):
        self_host_cost(1.99, 200, utilisation=1.5)
    with pytest.raises(ValueError, match="hours_per_day"):
        self_host_cost(1.99, 200, hours_per_day=25)
    with pytest.raises(ValueError, match="price per hour"):
        self_host_cost(None, 200)
    with pytest.raises(ValueError, match="basis"):
        break_even(self_host_cost(1.99, 200), "gpt-4o", basis="tokens")
    with pytest.raises(ValueError, match="request basis"):
        break_even(self_host_cost(1.99, 200), "gpt-4o", basis="request")


def test_throughput_from_a_callable():
    hosted = self_host_cost(1.99, lambda: 400)
    assert hosted.tokens_per_second == 400
    assert hosted.throughput_source == "measured"
    assert round(hosted.cost_per_mtok, 2) == D("1.38")


def test_measured_throughput_is_never_faked(monkeypatch):
    import smolgen

    monkeypatch.setitem(sys.modules, "smolgen.bench", None)
    # An earlier import leaves the submodule on the package, where `from smolgen import bench`
    # finds it first.
    monkeypatch.delattr(smolgen, "bench", raising=False)
    with pytest.raises(ThroughputUnavailableError):
        self_host_cost(1.99, measure=True)


def test_measured_throughput_hook(monkeypatch):
    calls = []

    def measured_throughput(model, **options):
        calls.append(model)
        return 123.5

    bench = types.ModuleType("smolgen.bench")
    bench.measured_throughput = measured_throughput  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smolgen.bench", bench)
    import smolgen

    monkeypatch.setattr(smolgen, "bench", bench, raising=False)
    hosted = self_host_cost(1.99, measure=True, model="smollm2-135m-instruct")
    assert hosted.tokens_per_second == D("123.5")
    assert hosted.throughput_source == "measured: smollm2-135m-instruct"
    assert calls == ["smollm2-135m-instruct"]


def test_model_price_object_and_json():
    price = ModelPrice("mine", D("1"), D("3"))
    be = break_even(self_host_cost(2, 100), price, basis="output")
    assert be.tokens_per_day == 16_000_000
    doc = be.to_dict()
    json.dumps(doc)
    assert doc["inputs"]["model"] == "mine"
    assert doc["self_hosted"]["inputs"]["gpu_hourly"] == 2


def test_formatting():
    assert format_usd(D("1432.8")) == "$1,432.80"
    assert format_usd(D("0.0006")) == "$0.0006"
    assert format_usd(D("2.763888")) == "$2.76"
    assert format_tokens(16_000_000) == "16M"
    assert format_tokens(950) == "950"


# ----------------------------------------------------------------------------------------------
# Plot (optional extra)
# ----------------------------------------------------------------------------------------------


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    be = break_even(self_host_cost(1.99, 200), "gpt-4o", basis="output")
    with pytest.raises(ImportError, match=r"smolgen\[plot\]"):
        plot_cost_curve(be)


def test_plot_marks_the_crossing(tmp_path):
    pytest.importorskip("matplotlib")
    be = break_even(
        self_host_cost(1.99, 200), "gpt-4o", avg_input_tokens=2000, avg_output_tokens=500
    )
    out = tmp_path / "cost.png"
    fig = plot_cost_curve(be, out)
    assert out.stat().st_size > 0
    ax = fig.axes[0]
    assert len(ax.lines) >= 3  # API line, self-hosted steps, break-even marker
    assert any("break-even" in t.get_text() for t in ax.texts)


def test_throughput_measured_by_our_own_benchmark(smollm2_gguf):
    hosted = self_host_cost(1.99, measure=True, model=str(smollm2_gguf))
    assert hosted.tokens_per_second > 1
    assert hosted.throughput_source == f"measured: {smollm2_gguf}"
    assert hosted.cost_per_mtok > 0


def test_a_quoted_throughput_says_what_it_was_quoted_for():
    hosted = self_host_cost(gpu="a100-80gb")
    assert hosted.tokens_per_second == 200
    assert hosted.throughput_source.startswith("price table: a 72B model at INT4")


# --- an offline batch job ------------------------------------------------------------------------


def test_batch_job_worked_example():
    """The docstring's: 1M requests x 40 tokens out at 600 tokens/s is 18.5 node-hours."""
    from smolgen.lab.cost import batch_job_cost

    job = batch_job_cost(1_000_000, 80, 40, 600, "0.10", vs=("gpt-4o-mini",))
    assert job.completion_tokens == 40_000_000
    assert job.node_hours == Decimal(40_000_000) / 600 / 3600
    assert round(job.node_hours, 2) == Decimal("18.52") and job.nodes == 1
    assert round(job.cost, 2) == Decimal("1.85")
    # gpt-4o-mini at $0.15 / $0.60 per 1M: 1M x (80 x 0.15 + 40 x 0.60) / 1M = $36.
    (mini,) = job.vs
    assert mini.cost == Decimal(36)
    assert mini.times_self_hosted == Decimal(36) / job.cost
    # A 4-hour deadline: 5 nodes, the same node-hours and cost, less wall time.
    rushed = batch_job_cost(1_000_000, 80, 40, 600, "0.10", deadline_hours=4)
    assert (rushed.nodes, rushed.cost) == (5, job.cost)
    assert rushed.wall_hours == job.node_hours / 5


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 80, 40, 600, 1), "above 0"),
        ((10, 80, 0, 600, 1), "above 0"),
        ((10, 80, 40, 0, 1), "tokens_per_second"),
        ((10, 80, 40, -1, 1), "tokens_per_second"),
        ((10, 80, 40, 600, "x"), "node_hourly"),
    ],
)
def test_batch_job_bad_inputs_are_argument_errors(args, match):
    from smolgen.errors import InvalidArgumentError
    from smolgen.lab.cost import batch_job_cost

    with pytest.raises(InvalidArgumentError, match=match):
        batch_job_cost(*args)
