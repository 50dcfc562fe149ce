"""The decision tree's branches, its rule of thumb, its agreement with the cost model, and the
"which single change would flip it" analysis."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from smolgen.lab.cost import break_even, self_host_cost
from smolgen.lab.decide import DecisionInputs, decide, gather_inputs, load_tree

PRICED = {
    "api_model": "gpt-4o",
    "avg_input_tokens": 2000,
    "avg_output_tokens": 500,
    "gpu": "a100-80gb",
}


def _path(decision):
    return [(s.question_id, s.answer) for s in decision.path]


# ----------------------------------------------------------------------------------------------
# One test per branch of the tree
# ----------------------------------------------------------------------------------------------


def test_pii_that_must_stay_means_self_host():
    d = decide(pii_must_stay=True, calls_per_day=10, general_tasks=True)
    assert (d.outcome, d.verdict, d.title) == ("self_host", "self_host", "Self-host")
    assert _path(d) == [("pii", True)]
    assert d.path[0].given


def test_over_100k_calls_means_consider_self_hosting():
    d = decide(pii_must_stay=False, calls_per_day=150_000, general_tasks=True)
    assert (d.outcome, d.verdict) == ("consider_self_host", "consider_self_host")
    assert _path(d) == [("pii", False), ("volume", True)]
    assert "150,000" in d.path[1].why and "100,000" in d.path[1].why


def test_a_100ms_latency_budget_means_a_small_self_hosted_model():
    d = decide(pii_must_stay=False, calls_per_day=5000, latency_budget_ms=80)
    assert d.outcome == "self_host_small"
    assert d.title == "Self-host a small model"
    assert _path(d) == [("pii", False), ("volume", False), ("latency", True)]


def test_narrow_domain_with_training_data_means_fine_tune():
    d = decide(
        pii_must_stay=False,
        calls_per_day=5000,
        latency_budget_ms=2000,
        narrow_domain=True,
        has_training_data=True,
        general_tasks=True,
    )
    assert d.outcome == "self_host_finetune"
    assert "LoRA" in d.title
    assert _path(d)[-1] == ("narrow", True)


def test_general_reasoning_means_api():
    d = decide(
        pii_must_stay=False,
        calls_per_day=5000,
        latency_budget_ms=2000,
        narrow_domain=False,
        has_training_data=False,
        general_tasks=True,
    )
    assert (d.outcome, d.verdict) == ("api", "api")
    assert [q for q, _ in _path(d)] == ["pii", "volume", "latency", "narrow", "general"]
    assert all(s.given for s in d.path)
    assert d.pitfalls == ()


def test_not_general_means_consider_self_hosting():
    d = decide(
        pii_must_stay=False,
        calls_per_day=5000,
        narrow_domain=False,
        has_training_data=False,
        general_tasks=False,
    )
    assert d.outcome == "consider_self_host"
    assert _path(d)[-1] == ("general", False)


@pytest.mark.parametrize(
    ("calls", "high"), [(100_000, False), (100_001, True), (99_999, False), (1_000_000, True)]
)
def test_volume_threshold_is_more_than_100k(calls, high):
    d = decide(calls_per_day=calls, general_tasks=True, flips=False)
    assert d.path[1].answer is high


@pytest.mark.parametrize(("ms", "fast"), [(100, True), (100.5, False), (50, True), (250, False)])
def test_latency_threshold_is_100ms(ms, fast):
    d = decide(calls_per_day=10, latency_budget_ms=ms, general_tasks=True, flips=False)
    assert d.path[2].answer is fast


def test_narrow_domain_without_training_data_goes_on():
    d = decide(calls_per_day=10, narrow_domain=True, has_training_data=False, general_tasks=True)
    assert d.outcome == "api"
    assert "no training data" in d.path[3].why


def test_answers_not_given_count_as_no_and_say_so():
    d = decide(general_tasks=True)
    assert d.outcome == "api"
    assert not d.path[0].given and "not given" in d.path[0].why
    assert "calls_per_day not given" in d.path[1].why
    # no latency budget is an answer in itself
    assert d.path[2].given and d.path[2].why == "no tight latency budget"


# ----------------------------------------------------------------------------------------------
# Checklists, rule of thumb, pitfalls
# ----------------------------------------------------------------------------------------------


def test_self_host_checklist_is_the_sources():
    checklist = " ".join(decide(pii_must_stay=True).checklist).lower()
    for item in ("model size", "licence", "pii", "eval", "latency budget", "monitoring", "cost"):
        assert item in checklist, item
    assert decide(pii_must_stay=True).pitfalls


def test_each_verdict_has_its_own_checklist():
    api = decide(general_tasks=True).checklist
    consider = decide(calls_per_day=500_000).checklist
    hosted = decide(pii_must_stay=True).checklist
    assert len({api, consider, hosted}) == 3
    assert any("break-even" in item for item in consider)
    assert any("tokens" in item for item in api)


def test_rule_of_thumb_two_of_three():
    two = decide(pii_must_stay=True, narrow_domain=True)
    assert two.rule_of_thumb.count == 2 and two.rule_of_thumb.says_self_host
    one = decide(narrow_domain=True, general_tasks=True)
    assert one.rule_of_thumb.count == 1 and not one.rule_of_thumb.says_self_host
    three = decide(pii_must_stay=True, narrow_domain=True, calls_per_day=200_000)
    assert three.rule_of_thumb.count == 3


def test_rule_of_thumb_disagreeing_with_the_tree_is_noted():
    # a latency budget alone sends the tree to self-hosting; the rule counts none of its factors
    d = decide(calls_per_day=5000, latency_budget_ms=80)
    assert d.verdict == "self_host" and d.rule_of_thumb.count == 0
    assert any("short of 2" in n for n in d.notes)
    # PII is a hard constraint: the tree self-hosts without a note, whatever the count
    assert decide(pii_must_stay=True).notes == ()
    # the tree never reaches "API" while two factors hold: PII or volume end it sooner
    d = decide(narrow_domain=True, calls_per_day=3000, general_tasks=True, **PRICED)
    assert d.verdict == "api" and d.rule_of_thumb.count == 1


# ----------------------------------------------------------------------------------------------
# The arithmetic: the same numbers as smolgen.lab.cost
# ----------------------------------------------------------------------------------------------


def test_break_even_agrees_with_the_cost_model():
    d = decide(pii_must_stay=False, calls_per_day=5000, general_tasks=True, **PRICED)
    expected = break_even(
        self_host_cost(gpu="a100-80gb"), "gpt-4o", avg_input_tokens=2000, avg_output_tokens=500
    )
    assert d.break_even is not None and d.api_cost is not None
    assert d.break_even.requests_per_day == expected.requests_per_day == 4776
    assert d.api_cost.daily_cost == Decimal(50)
    # 5,000 calls a day is above the 4,776 break-even: volume hurts, though under 100K
    assert (d.outcome, _path(d)) == ("consider_self_host", [("pii", False), ("volume", True)])
    assert "4,776" in d.path[1].why and "$50.00" in d.path[1].why and "$47.76" in d.path[1].why
    assert any("disagree" in n for n in d.notes)


def test_below_break_even_the_volume_does_not_hurt():
    d = decide(pii_must_stay=False, calls_per_day=3000, general_tasks=True, **PRICED)
    assert d.path[1].answer is False
    assert d.verdict == "api"


def test_over_100k_calls_can_still_be_cheaper_through_the_api():
    # 200K calls a day to GPT-4o mini cost $120/day; an 8-GPU instance costs $786.48/day
    d = decide(
        calls_per_day=200_000,
        general_tasks=True,
        api_model="gpt-4o-mini",
        avg_input_tokens=2000,
        avg_output_tokens=500,
        gpu="p4d.24xlarge",
        tokens_per_second=2000,
    )
    assert d.path[1].answer is False
    assert d.verdict == "api"
    assert any("100,000" in n for n in d.notes)


def test_the_decision_is_json_ready():
    d = decide(calls_per_day=5000, general_tasks=True, **PRICED)
    doc = d.to_dict()
    json.dumps(doc)
    assert doc["break_even"]["requests_per_day"] == 4776
    assert doc["inputs"]["calls_per_day"] == 5000


# ----------------------------------------------------------------------------------------------
# What would flip it
# ----------------------------------------------------------------------------------------------


def _flips(d):
    return {f.field: f for f in d.flips}


def test_flips_are_real_and_minimal_with_prices():
    d = decide(pii_must_stay=False, calls_per_day=3000, general_tasks=True, **PRICED)
    assert d.verdict == "api"
    flips = _flips(d)
    assert flips["calls_per_day"].new == 4777  # one call above the 4,776 break-even
    assert flips["pii_must_stay"].new is True
    assert flips["general_tasks"].new is False
    assert flips["latency_budget_ms"].new == 100
    # the GPU price at which 3,000 calls a day ($30/day) pays for 24 GPU hours: $1.25/h
    assert flips["gpu_hourly"].old == 1.99 and flips["gpu_hourly"].new == 1.24
    for flip in d.flips:
        changed = decide(
            DecisionInputs(**{**d.inputs.to_dict(), flip.field: flip.new}), flips=False
        )
        assert changed.verdict == flip.verdict != d.verdict
    # one call fewer does not flip it
    assert decide(d.inputs, calls_per_day=4776, flips=False).verdict == "api"


def test_flips_without_prices_use_the_100k_line():
    d = decide(pii_must_stay=False, calls_per_day=5000, general_tasks=True)
    assert _flips(d)["calls_per_day"].new == 100_001
    assert "calls_per_day: 5,000 -> 100,001" in _flips(d)["calls_per_day"].describe()
    high = decide(pii_must_stay=False, calls_per_day=150_000, general_tasks=True)
    assert _flips(high)["calls_per_day"].new == 100_000


def test_flips_of_a_self_host_decision():
    d = decide(pii_must_stay=True, calls_per_day=10, general_tasks=True)
    flips = _flips(d)
    assert set(flips) == {"pii_must_stay"}
    assert flips["pii_must_stay"].verdict == "api"


def test_flips_can_be_skipped():
    assert decide(pii_must_stay=True, flips=False).flips == ()


# ----------------------------------------------------------------------------------------------
# The tree is data
# ----------------------------------------------------------------------------------------------


def test_tree_data_drives_the_decision(tmp_path):
    tree = load_tree()
    assert tree.high_volume_calls_per_day == 100_000
    doc = json.loads(json.dumps(tree.doc))
    doc["high_volume_calls_per_day"] = 1_000
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(doc))
    mine = load_tree(path)
    assert decide(calls_per_day=5000, general_tasks=True, tree=mine).verdict == "consider_self_host"
    assert decide(calls_per_day=5000, general_tasks=True).verdict == "api"


def test_broken_tree_is_refused(tmp_path):
    doc = json.loads(json.dumps(load_tree().doc))
    doc["questions"][0]["no"] = {"next": "nowhere"}
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="unknown question"):
        load_tree(path)


def test_unknown_input_is_refused():
    with pytest.raises(ValueError, match="unknown decision inputs"):
        decide(pii=True)


# ----------------------------------------------------------------------------------------------
# Asking a person
# ----------------------------------------------------------------------------------------------


def _scripted(answers):
    asked = []

    def ask(spec):
        asked.append(spec.id)
        return answers.get(spec.id)

    return ask, asked


def test_gather_asks_only_what_the_path_needs():
    ask, asked = _scripted({"pii_must_stay": True, "calls_per_day": 50, "narrow_domain": False})
    inputs = gather_inputs(ask)
    # PII ends the tree; the rule of thumb still wants the volume and the domain
    assert asked == ["pii_must_stay", "calls_per_day", "api_model", "narrow_domain"]
    assert decide(inputs).outcome == "self_host"


def test_gather_walks_to_the_end_and_prices():
    answers = {
        "pii_must_stay": False,
        "calls_per_day": 3000,
        "api_model": "gpt-4o",
        "avg_input_tokens": 2000,
        "avg_output_tokens": 500,
        "gpu_hourly": 1.99,
        "tokens_per_second": 200,
        "latency_budget_ms": None,
        "narrow_domain": False,
        "has_training_data": False,
        "general_tasks": True,
    }
    ask, asked = _scripted(answers)
    inputs = gather_inputs(ask)
    assert asked == list(answers)
    d = decide(inputs)
    assert d.verdict == "api"
    assert d.break_even is not None and d.break_even.requests_per_day == 4776


def test_gather_skips_what_is_known():
    ask, asked = _scripted({"general_tasks": True})
    gather_inputs(ask, {"pii_must_stay": False, "calls_per_day": 10, "narrow_domain": False})
    assert "pii_must_stay" not in asked and "calls_per_day" not in asked
    assert asked[-1] == "general_tasks"
