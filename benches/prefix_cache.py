"""Time to first token for chat requests that share a long system prompt, with and without the
prefix cache.

    python benches/prefix_cache.py [--model SPEC] [--system-tokens 500] [--requests 8]

Each request is the same ~500-token system prompt plus a different short question (a chat
product's usual shape). Without the cache every request prefills everything; with it, the first
request pays and the later ones prefill only their question. Prints the median TTFT of requests
2..N for both, their ratio, and checks that both give the same tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

QUESTIONS = [
    "What is the capital of France?",
    "Name a river in Africa.",
    "How tall is Mount Everest?",
    "Which ocean is the largest?",
    "What is the longest river in Europe?",
    "Where is the Atacama desert?",
    "What is the capital of Japan?",
    "Name a lake in Canada.",
    "Which country has the most islands?",
    "What is a fjord?",
]


def system_prompt(model, tokens: int) -> str:
    sentence = (
        "You are a patient geography teacher. Answer in one short sentence, name the "
        "continent when it helps, and never invent facts you are not sure of. "
    )
    text = ""
    while len(model.tokenize(text)) < tokens:
        text += sentence
    return text


def run(model, system: str, requests: int, cache: bool) -> tuple[list[float], list[list[int]]]:
    model.configure_prefix_cache(clear=True)
    ttfts, outputs = [], []
    for question in (QUESTIONS * (requests // len(QUESTIONS) + 1))[:requests]:
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]
        c = model.chat(messages, max_tokens=8, temperature=0, prefix_cache=cache)
        ttfts.append(c.timings.ttft_s)
        outputs.append(c.token_ids)
    return ttfts, outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--system-tokens", type=int, default=500)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="sets RAYON_NUM_THREADS")
    args = parser.parse_args()
    if args.threads:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import smolgen

    model = smolgen.load(args.model)
    system = system_prompt(model, args.system_tokens)
    prompt_tokens = len(
        smolgen.chat.chat_prompt_ids(model, [{"role": "system", "content": system}])
    )
    off, out_off = run(model, system, args.requests, cache=False)
    on, out_on = run(model, system, args.requests, cache=True)
    same = out_off == out_on
    cold, warm = statistics.median(off[1:]), statistics.median(on[1:])
    print(f"system prompt: {prompt_tokens} tokens, {args.requests} requests, 8 tokens each")
    print(f"TTFT without prefix cache: {cold * 1000:8.1f} ms (median of requests 2..N)")
    print(
        f"TTFT with prefix cache:    {warm * 1000:8.1f} ms (first request: {on[0] * 1000:.0f} ms)"
    )
    print(f"speed-up: {cold / warm:.1f}x; same tokens with and without: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
