"""Looking inside: the next-token distribution and per-token scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import smolgen
from smolgen.cli import main


def test_peek_ranks_like_llama_cpp(smollm2, greedy_vectors):
    for case in greedy_vectors:
        result = smollm2.peek(case["ids"], top_k=5)
        ids = [c.id for c in result.candidates]
        ref = [i for i, _ in case["top5"]]
        assert ids[0] == ref[0]
        assert len(set(ids) & set(ref)) >= 4
        assert result.candidates[0].logprob == pytest.approx(case["top5"][0][1], abs=0.35)


def test_peek_is_consistent_with_the_logits(smollm2):
    result = smollm2.peek("The sun rises in the", top_k=10)
    logits = smollm2.logits("The sun rises in the").astype(np.float64)
    logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    p = np.exp(logp)
    assert [c.id for c in result.candidates] == list(np.argsort(-logp, kind="stable")[:10])
    for c in result.candidates:
        assert c.probability == pytest.approx(math.exp(c.logprob))
        assert c.logprob == pytest.approx(logp[c.id])
        assert c.piece == smollm2.tokenizer.piece(c.id).text
    assert result.entropy_bits == pytest.approx(-(p * logp).sum() / math.log(2))
    assert result.top1_probability == result.candidates[0].probability
    assert result.margin == pytest.approx(
        result.candidates[0].probability - result.candidates[1].probability
    )
    assert result.candidates[0].piece == " sky"


def test_flat_and_peaked_distributions(smollm2):
    peaked = smollm2.peek("Once upon a time")
    assert not peaked.is_flat and peaked.top1_probability > 0.8 and peaked.entropy_bits < 1.5
    flat = smollm2.peek("My favourite food is")
    assert flat.is_flat and flat.entropy_bits > 5
    with pytest.raises(smolgen.InvalidArgumentError):
        smollm2.peek("hi", top_k=0)


def test_score_reads_log_probabilities_off_one_pass(smollm2):
    text = "The theory of relativity changed physics."
    s = smollm2.score(text)
    ids = smollm2.tokenize(text)
    assert [t.id for t in s.tokens] == ids[1:]
    logits = smollm2.logits(ids, positions="all").astype(np.float64)
    for pos, t in enumerate(s.tokens, start=1):
        row = logits[pos - 1]
        expected = row[t.id] - row.max() - np.log(np.exp(row - row.max()).sum())
        assert t.logprob == pytest.approx(expected, abs=1e-6)
    assert s.perplexity == pytest.approx(math.exp(-s.total_logprob / len(s.tokens)))
    shuffled = smollm2.score("physics. relativity changed The of theory")
    assert shuffled.perplexity > 3 * s.perplexity
    assert smollm2.score("Hi").tokens == []


def test_peek_command(smollm2_gguf, capsys):
    assert main(["peek", "Once upon a time", "-m", str(smollm2_gguf), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "entropy" in out and "','" in out and "█" in out
    assert main(["peek", "Once upon a time", "-m", str(smollm2_gguf), "--json"]) == 0
    assert '"entropy_bits"' in capsys.readouterr().out


def test_sweep_shows_temperature_at_work(smollm2_gguf, capsys):
    args = ["sweep", "Once upon a time", "-m", str(smollm2_gguf), "--runs", "3", "-n", "10"]
    assert main([*args, "--temperatures", "0,1.5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    greedy, hot = results
    assert greedy["temperature"] == 0 and len(set(greedy["texts"])) == 1
    assert greedy["common_prefix_tokens"] == 10
    assert hot["common_prefix_tokens"] < 10
    with pytest.raises(SystemExit) as usage_error:  # argparse rejects it while parsing
        main([*args, "--temperatures", "0.3,x"])
    assert usage_error.value.code == 2
    assert main([*args, "--runs", "0"]) == 2
