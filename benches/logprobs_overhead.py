"""What asking for log-probabilities costs: decode tokens/s with and without ``logprobs=N``.

Greedy, a fixed number of decoded tokens (end-of-generation suppressed), the two settings
alternating so that machine noise hits both alike; prints the medians and the overhead.
"""

from __future__ import annotations

import argparse
import statistics

import smolgen
from smolgen.bench import fixed_length_decode, prompt_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="path or alias (default: the default)")
    parser.add_argument("--logprobs", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = smolgen.load(args.model)
    ids = prompt_ids(model, args.prompt_tokens)

    def rate(logprobs: int | None) -> float:
        c = fixed_length_decode(model, ids, args.gen_tokens, logprobs=logprobs)
        return c.timings.decode_tokens_per_s

    rate(None), rate(args.logprobs)  # warm-up
    plain, with_lp = [], []
    for _ in range(args.repeats):
        plain.append(rate(None))
        with_lp.append(rate(args.logprobs))
    a, b = statistics.median(plain), statistics.median(with_lp)
    print(f"decode tok/s, median of {args.repeats}: without logprobs {a:.1f}, "
          f"with logprobs={args.logprobs} {b:.1f}; overhead {100 * (a - b) / a:.1f}% "
          f"({1000 / b - 1000 / a:.3f} ms per token)")  # fmt: skip


if __name__ == "__main__":
    main()
