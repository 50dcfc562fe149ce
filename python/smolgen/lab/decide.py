"""API or self-host? A decision helper that shows its path and its arithmetic.

The decision tree and the two-of-three rule of thumb live in a data file
(``data/decision_tree.json``), not in nested ifs: each question names the input fields it reads
and where each answer leads. :func:`decide` walks it and returns a :class:`Decision` with

- the outcome and the path taken (each question, the answer, why),
- the follow-up checklist for that outcome,
- the rule of thumb's count (data must stay on premises; volume high enough that per-call cost
  hurts; a narrow, well-defined domain: two of three make self-hosting right),
- the break-even from :mod:`smolgen.lab.cost` when the volume, token counts and prices are given, so
  that "is the volume high enough?" is answered by the same arithmetic ``smolgen cost`` shows,
- the single changes of input that would flip the verdict.
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from smolgen.errors import InvalidArgumentError
from smolgen.lab import cost as _cost

__all__ = [
    "Decision",
    "DecisionInputs",
    "DecisionTree",
    "FieldSpec",
    "Flip",
    "RuleOfThumb",
    "Step",
    "decide",
    "gather_inputs",
    "load_tree",
]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionInputs:
    """Everything the decision may read. None means "not given".

    Attributes:
        pii_must_stay: the data includes PII (or other data) that must not leave the network.
        calls_per_day: calls a day.
        latency_budget_ms: the latency budget per call, or None for no tight budget.
        narrow_domain: the task is a narrow, well-defined domain.
        has_training_data: there is training data for that domain.
        general_tasks: the task needs general reasoning, code or many languages.
        api_model: the API model to price against (a name from the price table).
        avg_input_tokens: input tokens per call.
        avg_output_tokens: output tokens per call.
        gpu: a GPU from the price table (its price and quoted throughput).
        gpu_hourly: the GPU's price per hour (overrides ``gpu``'s).
        tokens_per_second: the GPU's throughput, if known.
        utilisation: the share of paid GPU hours spent generating.
        hours_per_day: GPU hours paid each day.
    """

    pii_must_stay: bool | None = None
    calls_per_day: int | None = None
    latency_budget_ms: float | None = None
    narrow_domain: bool | None = None
    has_training_data: bool | None = None
    general_tasks: bool | None = None
    api_model: str | None = None
    avg_input_tokens: int | None = None
    avg_output_tokens: int | None = None
    gpu: str | None = None
    gpu_hourly: float | None = None
    tokens_per_second: float | None = None
    utilisation: float = 1.0
    hours_per_day: float = 24.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


_INPUT_FIELDS = {f.name for f in fields(DecisionInputs)}


# --------------------------------------------------------------------------------------------
# The tree as data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """How to ask for one input field.

    Attributes:
        id: the :class:`DecisionInputs` field.
        type: ``"bool"``, ``"int"``, ``"number"`` or ``"str"``.
        prompt: the question to put to a person.
        optional: a blank answer is allowed (and means None).
        requires: only ask when this other field has a value.
    """

    id: str
    type: str
    prompt: str
    optional: bool = False
    requires: str | None = None


@dataclass(frozen=True)
class DecisionTree:
    """The parsed decision data (see ``data/decision_tree.json``)."""

    doc: dict[str, Any]

    @property
    def start(self) -> str:
        return str(self.doc["start"])

    @property
    def high_volume_calls_per_day(self) -> int:
        return int(self.doc["high_volume_calls_per_day"])

    @property
    def questions(self) -> dict[str, dict[str, Any]]:
        return {q["id"]: q for q in self.doc["questions"]}

    @property
    def fields(self) -> dict[str, FieldSpec]:
        return {
            name: FieldSpec(
                id=name,
                type=spec["type"],
                prompt=spec["prompt"],
                optional=bool(spec.get("optional", False)),
                requires=spec.get("requires"),
            )
            for name, spec in self.doc["fields"].items()
        }

    def derived_from(self, name: str) -> list[str]:
        """The input fields a derived fact is computed from (the field itself if an input)."""
        derived = self.doc.get("derived", {}).get(name)
        return list(derived["from"]) if derived else [name]

    def asks_for(self, name: str) -> list[str]:
        """The input fields to ask for so that ``name`` (an input or a derived fact) is known."""
        if name in _INPUT_FIELDS:
            return [name]
        out: list[str] = []
        for q in self.doc["questions"]:
            if name in _condition_fields(q["when"]):
                out += [a for a in q.get("asks", []) if a not in out]
        return out or self.derived_from(name)

    def outcome(self, outcome_id: str) -> dict[str, Any]:
        return dict(self.doc["outcomes"][outcome_id])

    def checklist(self, outcome_id: str) -> tuple[str, ...]:
        return tuple(self.doc["checklists"][self.outcome(outcome_id)["checklist"]])

    def verdict_label(self, verdict: str) -> str:
        return str(self.doc["verdicts"][verdict])


def _validate_tree(doc: Mapping[str, Any]) -> None:
    """Check that every link in the tree points somewhere and every field exists."""
    try:
        qids = {q["id"] for q in doc["questions"]}
        outcomes = doc["outcomes"]
        if doc["start"] not in qids:
            raise InvalidArgumentError(f"start question {doc['start']!r} does not exist")
        for q in doc["questions"]:
            for branch in ("yes", "no"):
                target = q[branch]
                if "outcome" in target and target["outcome"] not in outcomes:
                    raise InvalidArgumentError(f"{q['id']}.{branch}: unknown outcome")
                if "next" in target and target["next"] not in qids:
                    raise InvalidArgumentError(f"{q['id']}.{branch}: unknown question")
                if ("outcome" in target) == ("next" in target):
                    raise InvalidArgumentError(f"{q['id']}.{branch}: needs outcome or next")
            for name in q.get("asks", []):
                if name not in doc["fields"] or name not in _INPUT_FIELDS:
                    raise InvalidArgumentError(f"{q['id']}: unknown field {name!r}")
        for oid, outcome in outcomes.items():
            if outcome["checklist"] not in doc["checklists"]:
                raise InvalidArgumentError(f"outcome {oid}: unknown checklist")
            if outcome["verdict"] not in doc["verdicts"]:
                raise InvalidArgumentError(f"outcome {oid}: unknown verdict")
    except KeyError as exc:
        raise InvalidArgumentError(f"malformed decision tree: missing key {exc}") from exc
    except TypeError as exc:
        raise InvalidArgumentError(f"malformed decision tree: {exc}") from exc


def load_tree(path: str | os.PathLike[str] | None = None) -> DecisionTree:
    """Read the decision data: smolgen's own, or a JSON file of the same shape.

    Raises:
        InvalidArgumentError: the file cannot be read, is not JSON, or has a broken link.
    """
    if path is None:
        return _default_tree()
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: cannot read the decision tree ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{path}: the decision tree is not JSON ({exc})") from exc
    _validate_tree(doc)
    return DecisionTree(doc)


@lru_cache(maxsize=1)
def _default_tree() -> DecisionTree:
    text = (resources.files("smolgen.lab") / "data" / "decision_tree.json").read_text("utf-8")
    doc = json.loads(text)
    _validate_tree(doc)
    return DecisionTree(doc)


# --------------------------------------------------------------------------------------------
# Facts: the inputs plus what the cost model derives from them
# --------------------------------------------------------------------------------------------


@dataclass
class _Facts:
    values: dict[str, Any]
    api: _cost.ApiCostEstimate | None = None
    break_even: _cost.BreakEven | None = None
    notes: list[str] = field(default_factory=list)


def _derive(
    inputs: DecisionInputs, tree: DecisionTree, price_table: _cost.PriceTable | None
) -> _Facts:
    facts = _Facts(values=inputs.to_dict())
    v = facts.values
    calls = inputs.calls_per_day
    threshold = tree.high_volume_calls_per_day

    has_cost = (
        calls is not None
        and inputs.api_model is not None
        and inputs.avg_input_tokens is not None
        and inputs.avg_output_tokens is not None
        and (inputs.gpu_hourly is not None or inputs.gpu is not None)
    )
    if has_cost:
        assert calls is not None
        facts.api = _cost.estimate_monthly_cost(
            calls,
            inputs.avg_input_tokens,  # type: ignore[arg-type]
            inputs.avg_output_tokens,  # type: ignore[arg-type]
            inputs.api_model,  # type: ignore[arg-type]
            price_table=price_table,
        )
        hosted = _cost.self_host_cost(
            inputs.gpu_hourly,
            inputs.tokens_per_second,
            gpu=inputs.gpu,
            utilisation=inputs.utilisation,
            hours_per_day=inputs.hours_per_day,
            price_table=price_table,
        )
        be = _cost.break_even(
            hosted,
            facts.api.price,
            avg_input_tokens=inputs.avg_input_tokens,
            avg_output_tokens=inputs.avg_output_tokens,
        )
        facts.break_even = be
        gpus = hosted.gpus_for(facts.api.daily_output_tokens)
        hosted_daily = hosted.daily_cost * gpus
        hurts = facts.api.daily_cost > hosted_daily
        be_calls = be.requests_per_day
        be_text = f"{be_calls:,.0f}" if be_calls is not None and be_calls.is_finite() else "never"
        gpu_text = f"{gpus} GPU{'s' if gpus > 1 else ''}"
        v["volume_hurts"] = hurts
        v["volume_reason"] = (
            f"{calls:,} calls a day cost {_cost.format_usd(facts.api.daily_cost)} a day through "
            f"{facts.api.price.name or facts.api.model}, {'more' if hurts else 'less'} than "
            f"{_cost.format_usd(hosted_daily)} a day for {gpu_text} at "
            f"{_cost.format_usd(hosted.gpu_hourly)}/h x {float(hosted.hours_per_day):g} h "
            f"(break-even: {be_text} calls a day)"
        )
        if hosted.tokens_per_second is None:
            facts.notes.append(
                "No GPU throughput was given, so one GPU is assumed to carry the whole volume; "
                "pass tokens_per_second to check that it can."
            )
        if (calls > threshold) != hurts:
            facts.notes.append(
                f"The source's rule of thumb ({threshold:,} calls a day) and the computed "
                f"break-even disagree here; the decision follows the arithmetic."
            )
    elif calls is not None:
        hurts = calls > threshold
        v["volume_hurts"] = hurts
        v["volume_reason"] = (
            f"{calls:,} calls a day is {'more' if hurts else 'not more'} than {threshold:,} "
            "(no prices given: the rule of thumb, not a computed break-even)"
        )
    else:
        v["volume_hurts"] = None
        v["volume_reason"] = "the call volume was not given"

    budget = inputs.latency_budget_ms
    if budget is None:
        v["latency_reason"] = "no tight latency budget"
    else:
        v["latency_reason"] = f"a budget of {budget:g} ms leaves room for a call to a hosted model"

    narrow, data = inputs.narrow_domain, inputs.has_training_data
    if narrow and not data:
        v["narrow_reason"] = "a narrow domain, but no training data to fine-tune on"
    elif data and not narrow:
        v["narrow_reason"] = "training data, but not a narrow domain"
    else:
        v["narrow_reason"] = "not a narrow domain with training data"
    return facts


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "is": lambda a, b: a is b or a == b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def _parts(cond: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The sub-conditions of an ``all``/``any`` condition; None for a single comparison."""
    if "all" in cond:
        return list(cond["all"])
    if "any" in cond:
        return list(cond["any"])
    return None


def _evaluate(cond: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """Evaluate a condition; returns (result, fields that were not given)."""
    if (subs := _parts(cond)) is not None:
        parts = [_evaluate(c, values) for c in subs]
        missing = [m for _, ms in parts for m in ms]
        results = [r for r, _ in parts]
        return (all(results) if "all" in cond else any(results)), missing
    name = cond["field"]
    value = values.get(name)
    if value is None:
        return False, [name]
    for op, fn in _OPS.items():
        if op in cond:
            return bool(fn(value, cond[op])), []
    raise InvalidArgumentError(f"condition on {name!r} has no operator")


class _SafeDict(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(template: str, values: Mapping[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), _SafeDict(values))
    except (ValueError, TypeError):
        return template


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One question on the path.

    Attributes:
        question_id: the question's id in the tree.
        question: the question.
        answer: the answer taken (a field that was not given counts as "no").
        given: whether every field the question reads was given.
        why: the reason, in words.
    """

    question_id: str
    question: str
    answer: bool
    given: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleOfThumb:
    """The two-of-three rule's count.

    Attributes:
        factors: ``(id, text, holds)`` for each factor.
        need: how many must hold.
    """

    factors: tuple[tuple[str, str, bool], ...]
    need: int

    @property
    def count(self) -> int:
        """How many factors hold."""
        return sum(1 for _, _, holds in self.factors if holds)

    @property
    def says_self_host(self) -> bool:
        """Whether the rule says self-hosting is right."""
        return self.count >= self.need

    def to_dict(self) -> dict[str, Any]:
        return {
            "factors": [{"id": i, "text": t, "holds": h} for i, t, h in self.factors],
            "need": self.need,
            "count": self.count,
            "says_self_host": self.says_self_host,
        }


@dataclass(frozen=True)
class Flip:
    """A single change of input that changes the verdict.

    Attributes:
        field: the input changed.
        old: its value now.
        new: the value that flips the verdict.
        outcome: the outcome with the new value.
        verdict: the verdict with the new value.
        title: the outcome's title.
    """

    field: str
    old: Any
    new: Any
    outcome: str
    verdict: str
    title: str

    def describe(self) -> str:
        """``calls_per_day: 5,000 -> 100,001 gives 'Consider self-hosting'``."""
        return f"{self.field}: {_show(self.old)} -> {_show(self.new)} gives {self.title!r}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


def _show(value: Any) -> str:
    if value is None:
        return "not given"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,g}"
    return str(value)


@dataclass(frozen=True)
class Decision:
    """The recommendation, how it was reached, and what would change it.

    Attributes:
        inputs: what was given.
        outcome: the outcome id (``"self_host"``, ``"self_host_small"``,
            ``"self_host_finetune"``, ``"consider_self_host"``, ``"api"``).
        verdict: ``"self_host"``, ``"consider_self_host"`` or ``"api"``.
        title: the outcome in words.
        path: the questions asked, in order.
        checklist: what to do next for this outcome.
        rule_of_thumb: the two-of-three count.
        api_cost: the API workload's cost, when priced.
        break_even: the break-even against the GPU, when priced.
        notes: caveats (assumptions, disagreements between the rules).
        pitfalls: the source's named pitfalls.
        flips: single changes of input that change the verdict.
    """

    inputs: DecisionInputs
    outcome: str
    verdict: str
    title: str
    path: tuple[Step, ...]
    checklist: tuple[str, ...]
    rule_of_thumb: RuleOfThumb
    api_cost: _cost.ApiCostEstimate | None = None
    break_even: _cost.BreakEven | None = None
    notes: tuple[str, ...] = ()
    pitfalls: tuple[str, ...] = ()
    flips: tuple[Flip, ...] = ()

    @property
    def self_host(self) -> bool:
        """True when the verdict is to self-host outright."""
        return self.verdict == "self_host"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "inputs": self.inputs.to_dict(),
            "outcome": self.outcome,
            "verdict": self.verdict,
            "title": self.title,
            "path": [s.to_dict() for s in self.path],
            "checklist": list(self.checklist),
            "rule_of_thumb": self.rule_of_thumb.to_dict(),
            "api_cost": self.api_cost.to_dict() if self.api_cost else None,
            "break_even": self.break_even.to_dict() if self.break_even else None,
            "notes": list(self.notes),
            "pitfalls": list(self.pitfalls),
            "flips": [f.to_dict() for f in self.flips],
        }


# --------------------------------------------------------------------------------------------
# Deciding
# --------------------------------------------------------------------------------------------


def _walk(tree: DecisionTree, values: Mapping[str, Any]) -> tuple[str, list[Step]]:
    questions = tree.questions
    specs = tree.fields
    current = tree.start
    path: list[Step] = []
    for _ in range(len(questions) + 1):
        q = questions[current]
        answer, missing = _evaluate(q["when"], values)
        # a blank optional field (no latency budget) is an answer, not a gap
        missing = [m for m in missing if not (m in specs and specs[m].optional)]
        branch = q["yes" if answer else "no"]
        why = _fill(branch.get("why", ""), values)
        if missing:
            names = ", ".join(dict.fromkeys(n for m in missing for n in tree.derived_from(m)))
            why = f"{names} not given: taken as no; {why}"
        path.append(Step(q["id"], q["text"], answer, not missing, why))
        if "outcome" in branch:
            return branch["outcome"], path
        current = branch["next"]
    raise InvalidArgumentError("the decision tree loops")  # pragma: no cover - validated


def _decide_once(
    inputs: DecisionInputs, tree: DecisionTree, price_table: _cost.PriceTable | None
) -> Decision:
    facts = _derive(inputs, tree, price_table)
    outcome, path = _walk(tree, facts.values)
    spec = tree.outcome(outcome)
    rule = tree.doc["rule_of_thumb"]
    factors = tuple(
        (f["id"], f["text"], _evaluate(f["when"], facts.values)[0]) for f in rule["factors"]
    )
    thumb = RuleOfThumb(factors=factors, need=int(rule["need"]))
    notes = list(facts.notes)
    verdict = spec["verdict"]
    if thumb.says_self_host and verdict == "api":
        held = ", ".join(t for _, t, h in factors if h)
        notes.append(
            f"The rule of thumb points the other way ({thumb.count} of {len(factors)} hold: "
            f"{held}): weigh it before choosing the API."
        )
    elif not thumb.says_self_host and verdict == "self_host" and outcome != "self_host":
        notes.append(
            f"The rule of thumb counts {thumb.count} of its {len(factors)} factors, short of "
            f"{thumb.need}: check that the gain is worth running the model yourself."
        )
    return Decision(
        inputs=inputs,
        outcome=outcome,
        verdict=verdict,
        title=spec["title"],
        path=tuple(path),
        checklist=tree.checklist(outcome),
        rule_of_thumb=thumb,
        api_cost=facts.api,
        break_even=facts.break_even,
        notes=tuple(notes),
        pitfalls=tuple(tree.doc.get("pitfalls", [])) if verdict != "api" else (),
    )


def _thresholds(cond: Mapping[str, Any], name: str) -> list[Any]:
    """Every constant a condition compares ``name`` against."""
    if (subs := _parts(cond)) is not None:
        return [t for c in subs for t in _thresholds(c, name)]
    if cond.get("field") != name:
        return []
    return [cond[op] for op in ("gt", "ge", "lt", "le") if op in cond]


def _candidates(
    inputs: DecisionInputs, tree: DecisionTree, decision: Decision
) -> dict[str, list[Any]]:
    """Values worth trying for each input: the other answer of a yes/no, each side of every
    threshold the tree or the cost model uses."""
    conds = [q["when"] for q in tree.doc["questions"]]
    out: dict[str, list[Any]] = {}
    for name in ("pii_must_stay", "narrow_domain", "has_training_data", "general_tasks"):
        out[name] = [not bool(getattr(inputs, name))]

    calls: set[int] = {tree.high_volume_calls_per_day, tree.high_volume_calls_per_day + 1}
    be = decision.break_even
    if be is not None and be.requests_per_day is not None and be.requests_per_day.is_finite():
        x = be.requests_per_day
        lo = int(x.to_integral_value(rounding=ROUND_FLOOR))
        hi = int(x.to_integral_value(rounding=ROUND_CEILING))
        calls.update({max(lo - 1, 0), lo, hi, hi + 1})
        cap = be.self_hosted.capacity_tokens_per_day
        if cap and be.avg_output_tokens:
            # where one more GPU is needed: API and GPU costs may cross again there
            per_gpu = cap / be.avg_output_tokens
            for n in range(1, 4):
                edge = per_gpu * n
                calls.update({int(edge), int(edge) + 1})
    current_calls = inputs.calls_per_day
    out["calls_per_day"] = sorted(
        (c for c in calls if c != current_calls),
        key=lambda c: abs(c - (current_calls or 0)),
    )

    limits = [t for c in conds for t in _thresholds(c, "latency_budget_ms")]
    budgets: list[Any] = [None]
    for t in limits:
        budgets += [t, math.floor(t) + 1]
    out["latency_budget_ms"] = [b for b in budgets if b != inputs.latency_budget_ms]

    if decision.api_cost is not None and be is not None:
        # the GPU price at which the GPU costs what the API does at today's volume
        gpus = be.self_hosted.gpus_for(decision.api_cost.daily_output_tokens)
        price = decision.api_cost.daily_cost / (be.self_hosted.hours_per_day * gpus)
        cent = Decimal("0.01")
        below = price.quantize(cent, rounding=ROUND_FLOOR)
        if below == price:
            below -= cent
        above = price.quantize(cent, rounding=ROUND_CEILING)
        if above == price:
            above += cent
        out["gpu_hourly"] = [float(p) for p in (below, above) if p > 0]
    return out


def _flips(
    inputs: DecisionInputs,
    tree: DecisionTree,
    decision: Decision,
    price_table: _cost.PriceTable | None,
) -> tuple[Flip, ...]:
    found: list[Flip] = []
    for name, values in _candidates(inputs, tree, decision).items():
        for value in values:
            changed = replace(inputs, **{name: value})
            try:
                other = _decide_once(changed, tree, price_table)
            except ValueError:
                continue
            if other.verdict != decision.verdict:
                old = getattr(inputs, name)
                if name == "gpu_hourly" and old is None and decision.break_even is not None:
                    old = float(decision.break_even.self_hosted.gpu_hourly)
                found.append(
                    Flip(
                        field=name,
                        old=old,
                        new=value,
                        outcome=other.outcome,
                        verdict=other.verdict,
                        title=other.title,
                    )
                )
                break
    return tuple(found)


def decide(
    inputs: DecisionInputs | None = None,
    *,
    tree: DecisionTree | None = None,
    price_table: _cost.PriceTable | None = None,
    flips: bool = True,
    **answers: Any,
) -> Decision:
    """Walk the decision tree and return a recommendation with its path and its arithmetic.

    Args:
        inputs: the answers, or pass them as keywords (the fields of :class:`DecisionInputs`).
        tree: the decision data (default: smolgen's, from the source texts).
        price_table: where ``api_model`` and ``gpu`` are looked up.
        flips: also work out which single change of input would flip the verdict.

    Example:
        >>> decide(pii_must_stay=True, flips=False).title
        'Self-host'
    """
    unknown = set(answers) - _INPUT_FIELDS
    if unknown:
        raise InvalidArgumentError(f"unknown decision inputs: {', '.join(sorted(unknown))}")
    if inputs is None:
        inputs = DecisionInputs(**answers)
    elif answers:
        inputs = replace(inputs, **answers)
    tree = tree or _default_tree()
    decision = _decide_once(inputs, tree, price_table)
    if flips:
        decision = replace(decision, flips=_flips(inputs, tree, decision, price_table))
    return decision


# --------------------------------------------------------------------------------------------
# Asking a person
# --------------------------------------------------------------------------------------------

Ask = Callable[[FieldSpec], Any]


def gather_inputs(
    ask: Ask,
    known: Mapping[str, Any] | None = None,
    *,
    tree: DecisionTree | None = None,
    price_table: _cost.PriceTable | None = None,
) -> DecisionInputs:
    """Ask only the questions the tree reaches, then the rule of thumb's missing factors.

    Args:
        ask: called with a :class:`FieldSpec`; returns the typed answer, or None for a blank
            optional answer.
        known: answers already given (they are not asked again).
        tree: the decision data.
        price_table: where a named API model is looked up.
    """
    tree = tree or _default_tree()
    specs = tree.fields
    answers: dict[str, Any] = dict(known or {})
    asked: set[str] = set(answers)

    def ask_fields(names: list[str]) -> None:
        for name in names:
            if name in asked:
                continue
            spec = specs[name]
            if spec.requires is not None and answers.get(spec.requires) is None:
                continue
            asked.add(name)
            value = ask(spec)
            if value is not None:
                answers[name] = value

    questions = tree.questions
    current: str | None = tree.start
    while current is not None:
        q = questions[current]
        ask_fields(list(q.get("asks", [])))
        facts = _derive(DecisionInputs(**answers), tree, price_table)
        result, _ = _evaluate(q["when"], facts.values)
        branch = q["yes" if result else "no"]
        current = branch.get("next")
    for factor in tree.doc["rule_of_thumb"]["factors"]:
        for name in _condition_fields(factor["when"]):
            ask_fields(tree.asks_for(name))
    return DecisionInputs(**answers)


def _condition_fields(cond: Mapping[str, Any]) -> list[str]:
    if (subs := _parts(cond)) is not None:
        return [f for c in subs for f in _condition_fields(c)]
    return [cond["field"]]
