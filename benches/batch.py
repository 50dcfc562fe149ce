"""Throughput of a batch job against the same requests one at a time, and (optionally) on a
Ray cluster or through another OpenAI-compatible server.

    python benches/batch.py [--model SPEC] [--requests 1000] [--concurrency 8] [--sequential 100]
                            [--ray local --ray-actors 1] [--server URL --clients 8]

The job is a chat product's offline shape: one ~200-token system prompt, a different ~20-token
question per request, answers capped at 64 tokens, greedy. It prints requests/s and completion
tokens/s of:

- ``smolgen batch`` over all the requests (the file job, `--concurrency` decoding together);
- the same requests sent one at a time through ``Model.chat`` (the first ``--sequential`` of
  them, as that is slow; requests/s is a rate, so a prefix measures it);
- with ``--ray``, the same job through ``smolgen batch --ray`` (and whether its records equal the
  single-process run's, answer for answer);
- with ``--server``, the requests sent by ``--clients`` concurrent clients to an OpenAI-compatible
  ``/v1/chat/completions`` at URL (llama.cpp's server, llama-cpp-python's, vLLM's): the number a
  user of that server would see.

Run it on a quiet machine: nothing else should be running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SYSTEM = (
    "You are the support assistant of a small online shop that sells tea, coffee and the "
    "things people brew them with. Answer in one or two short sentences, politely, and only "
    "about the shop: orders, shipping, returns, payment and the products. If a question is "
    "about something else, say that you can only help with the shop. Shipping takes two to "
    "four working days inside the country and one to two weeks abroad; it is free above fifty "
    "euros. Returns are accepted within thirty days if the package is unopened. The shop takes "
    "cards, bank transfers and vouchers, never cash. Opening hours of the help line are nine "
    "to five on weekdays. Loose tea is sold in packs of fifty, one hundred and two hundred and "
    "fifty grams; coffee as beans or ground, in packs of two hundred and fifty grams and one "
    "kilogram. Gift cards never expire."
)
QUESTIONS = [
    "How long does shipping to Spain take for an order of loose tea?",
    "Can I return a kettle that I opened but never used at all?",
    "Do you sell decaffeinated coffee beans in one kilogram packs?",
    "Is shipping free for an order of forty two euros in total?",
    "Can I pay for my green tea order with a bank transfer?",
    "What are the opening hours of your help line on Saturdays?",
    "Does a gift card I received three years ago still work?",
    "Which sizes does your black tea come in, and which is cheapest?",
]


def requests(n: int) -> list[dict]:
    return [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "smolgen",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (ticket {i})"},
                ],
                "max_tokens": 64,
                "temperature": 0,
            },
        }
        for i in range(n)
    ]


def run_cli(args: list[str]) -> dict:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "smolgen", "batch", *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"smolgen batch failed: {done.stderr}")
    return json.loads(done.stdout)


def answers(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        out[r["custom_id"]] = r["response"]["body"]["choices"][0]["message"]["content"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--sequential", type=int, default=100, help="requests timed one at a time")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--ray", default=None, metavar="ADDRESS")
    p.add_argument("--ray-actors", type=int, default=1)
    p.add_argument("--server", default=None, metavar="URL", help="e.g. http://127.0.0.1:8080")
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args()
    import smolgen

    jobs = requests(args.requests)
    threads = ["--threads", str(args.threads)] if args.threads else []
    report: dict = {"requests": args.requests, "model": args.model}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps(j) + "\n" for j in jobs), encoding="utf-8")

        t = time.perf_counter()
        s = run_cli([str(src), str(Path(tmp) / "out.jsonl"), "-m", args.model, *threads,
                     "--concurrency", str(args.concurrency)])  # fmt: skip
        wall = time.perf_counter() - t  # the model's load included, as a user runs it
        report["batch"] = {
            "concurrency": args.concurrency,
            "requests_per_s": s["requests"] / wall,
            "completion_tokens_per_s": s["completion_tokens"] / wall,
            "wall_s": wall,
            "failed": s["failed"],
        }

        model = smolgen.load(args.model, threads=args.threads)
        model.chat([{"role": "user", "content": "Hi."}], max_tokens=4)  # warm
        t = time.perf_counter()
        tokens = 0
        for j in jobs[: args.sequential]:
            c = model.chat(j["body"]["messages"], max_tokens=64, temperature=0)
            tokens += c.usage.completion_tokens
        wall = time.perf_counter() - t
        report["sequential"] = {
            "requests": args.sequential,
            "requests_per_s": args.sequential / wall,
            "completion_tokens_per_s": tokens / wall,
        }
        del model
        report["batch_vs_sequential"] = (
            report["batch"]["requests_per_s"] / report["sequential"]["requests_per_s"]
        )

        if args.ray:
            t = time.perf_counter()
            s = run_cli([str(src), str(Path(tmp) / "ray.jsonl"), "-m", args.model, "--threads",
                         str(args.threads or os.cpu_count() or 1), "--ray", args.ray,
                         "--ray-actors", str(args.ray_actors)])  # fmt: skip
            wall = time.perf_counter() - t
            same = answers(Path(tmp) / "ray.jsonl") == answers(Path(tmp) / "out.jsonl")
            report["ray"] = {
                "actors": args.ray_actors,
                "requests_per_s": s["requests"] / wall,
                "records_equal_single_process": same,
            }

        if args.server:
            import urllib.request

            def ask(j: dict) -> int:
                body = json.dumps(j["body"]).encode()
                req = urllib.request.Request(
                    f"{args.server}/v1/chat/completions",
                    body,
                    {"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=600) as r:
                    return int(json.load(r)["usage"]["completion_tokens"])

            t = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                tokens = sum(pool.map(ask, jobs))
            wall = time.perf_counter() - t
            report["server"] = {
                "url": args.server,
                "clients": args.clients,
                "requests_per_s": args.requests / wall,
                "completion_tokens_per_s": tokens / wall,
            }
            report["batch_vs_server"] = (
                report["batch"]["requests_per_s"] / report["server"]["requests_per_s"]
            )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
