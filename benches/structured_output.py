"""What structured output costs per token: the time spent working out which tokens a grammar
allows next (``Timings.constraint_s``), next to the decode step it is part of.

    python benches/structured_output.py [--model SPEC] [--gen-tokens 128] [--repeats 5]

Each constraint runs greedy for exactly ``--gen-tokens`` tokens (end-of-generation suppressed;
the grammars are open-ended so they never run out): a list of records under a JSON Schema,
any JSON value, and a regular expression. The free run of the same prompt alternates with
them so that machine noise hits all alike. Prints, per constraint, the median over repeats of
the mask's cost per token, the decode step with and without it, and the mask's share of the
unconstrained step (the issue's target: under 10%). The first line is the one-time cost of the
model's vocabulary trie, paid by the first constrained request.

Run it on a quiet machine: nothing else should be running.
"""

from __future__ import annotations

import argparse
import statistics
import time

import smolgen
from smolgen.bench import fixed_length_decode

RECORDS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "pattern": "^[a-z]{1,12}@[a-z]{1,12}\\.com$"},
            "tags": {"type": "array", "items": {"enum": ["new", "vip", "late", "banned"]}},
        },
        "required": ["name", "age", "email", "tags"],
        "additionalProperties": False,
    },
}

CONSTRAINTS = {
    "json_schema (records)": {"json_schema": RECORDS},
    "json_schema (any JSON)": {"json_schema": {}},
    "regex (CSV lines)": {"regex": r"([A-Za-z ]{1,20},[0-9]{1,3}\n)+"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="path or alias (default: the default)")
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = smolgen.load(args.model)
    ids = model.chat_prompt([{"role": "user", "content": "List the customers as records."}])

    t0 = time.perf_counter()
    model.generate(ids, max_tokens=1, regex="a")
    print(f"first constrained request (builds the vocabulary trie): "
          f"{1000 * (time.perf_counter() - t0):.0f} ms")  # fmt: skip

    def step_ms(kwargs: dict) -> tuple[float, float]:
        c = fixed_length_decode(model, ids, args.gen_tokens, prefix_cache=False, **kwargs)
        t = c.timings
        return 1000 * t.decode_s / len(t.decode_steps_s), 1000 * t.constraint_s / args.gen_tokens

    for kwargs in (None, *CONSTRAINTS.values()):  # warm-up
        step_ms(kwargs or {})
    free: list[float] = []
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CONSTRAINTS}
    for _ in range(args.repeats):
        free.append(step_ms({})[0])
        for name, kwargs in CONSTRAINTS.items():
            runs[name].append(step_ms(kwargs))
    base = statistics.median(free)
    print(f"decode step without a constraint: {base:.3f} ms "
          f"(median of {args.repeats}, {args.gen_tokens} tokens)")  # fmt: skip
    for name, results in runs.items():
        step = statistics.median(s for s, _ in results)
        mask = statistics.median(m for _, m in results)
        print(f"{name:24s} mask {1000 * mask:7.1f} us/token | step {step:.3f} ms | "
              f"mask = {100 * mask / base:.1f}% of a free step")  # fmt: skip


if __name__ == "__main__":
    main()
