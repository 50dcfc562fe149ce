"""Looking inside: the next-token distribution and per-token scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import smolgen
from reference_llama import log_softmax
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
    logp = log_softmax(logits)
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
        expected = log_softmax(row)[t.id]
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


def test_generate_reports_logprobs_of_the_models_distribution(smollm2, greedy_vectors):
    """The first step is the prompt's own forward pass, so it equals Model.logits exactly.
    Later steps run one token at a time against the KV cache; a fresh batched pass over the
    same tokens rounds differently, and this model amplifies that to a few tenths of a nat."""
    case = greedy_vectors[0]
    c = smollm2.generate(case["ids"], max_tokens=6, temperature=0, logprobs=5)
    assert c.logprobs is not None and len(c.logprobs) == 6
    row = smollm2.logits(case["ids"]).astype(np.float64)
    logp = log_softmax(row)
    first = c.logprobs[0]
    assert first.logprob == pytest.approx(logp[first.id], abs=1e-4)
    assert [t.id for t in first.top_logprobs] == list(np.argsort(-logp, kind="stable")[:5])
    for t in first.top_logprobs:
        assert t.logprob == pytest.approx(logp[t.id], abs=1e-4)
    assert first.top_logprobs[0].id == case["top5"][0][0]
    rows = smollm2.logits(case["ids"] + c.token_ids, positions="all").astype(np.float64)
    for step, lp in enumerate(c.logprobs):
        assert lp.id == c.token_ids[step]
        assert lp.token == smollm2.tokenizer.piece(lp.id).text
        assert lp.bytes == smollm2.tokenizer.piece(lp.id).bytes
        top = lp.top_logprobs
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        assert top[0].id == lp.id and top[0].logprob == lp.logprob  # greedy takes the likeliest
        assert sum(math.exp(t.logprob) for t in top) <= 1 + 1e-6
        assert all(t.top_logprobs == [] for t in top)
        fresh = rows[len(case["ids"]) - 1 + step]
        fresh = log_softmax(fresh)
        assert lp.logprob == pytest.approx(fresh[lp.id], abs=0.5)
    assert c.to_dict()["logprobs"][0]["top_logprobs"][0]["id"] == first.top_logprobs[0].id


def test_streamed_chunks_carry_their_logprobs(smollm2):
    whole = smollm2.generate("Roses are red,", max_tokens=8, seed=1, logprobs=2)
    chunks = list(smollm2.generate("Roses are red,", max_tokens=8, seed=1, logprobs=2, stream=True))
    assert [ch.logprob.id for ch in chunks] == whole.token_ids
    assert [ch.logprob.logprob for ch in chunks] == [lp.logprob for lp in whole.logprobs]
    assert all(len(ch.logprob.top_logprobs) == 2 for ch in chunks)
    plain = smollm2.generate("Roses are red,", max_tokens=2)
    assert plain.logprobs is None
    zero = smollm2.generate("Roses are red,", max_tokens=2, logprobs=0)
    assert all(lp.top_logprobs == [] for lp in zero.logprobs)
    for bad in (-1, 21):
        with pytest.raises(smolgen.InvalidArgumentError):
            smollm2.generate("Roses are red,", max_tokens=2, logprobs=bad)


def test_attention_weights_match_the_reference(tiny_gguf, tiny_weights):
    import tiny_llama
    from reference_llama import forward

    ids = [1, 40, 72, 75, 75, 78, 259, 34]
    expected: list[np.ndarray] = []
    model = smolgen.load(tiny_gguf)
    kv = np.float16 if model.info["kv_cache_format"] == "f16" else None
    cfg = tiny_llama.CONFIG
    forward(tiny_weights, cfg, ids, interleaved=False, attention=expected, kv_dtype=kv)
    weights = model.attention(ids)
    assert weights.shape == (2, 4, 8, 8) and weights.dtype == np.float32
    np.testing.assert_allclose(weights, np.stack(expected), atol=1e-5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(weights, k=1) == 0)  # no query sees a later key
    np.testing.assert_array_equal(model.attention(ids, layers=[1, 0]), weights[::-1])
    for bad in ([2], [-1], []):
        with pytest.raises(smolgen.InvalidArgumentError):
            model.attention(ids, layers=bad)


def test_attention_on_the_real_model(smollm2):
    weights = smollm2.attention("The theory of relativity", layers=[0, 29])
    assert weights.shape == (2, 9, 4, 4)
    assert weights[:, :, 0, 0] == pytest.approx(1.0)  # the first token sees only itself


def test_peek_with_sampling_settings_and_plots(smollm2_gguf, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    model = ["-m", str(smollm2_gguf)]
    png = tmp_path / "peek.png"
    # T=0.7 gives " sky" ~0.70 and " east" ~0.12: a 0.75 nucleus keeps exactly those two.
    args = ["peek", "The sun rises in the", *model, "-t", "0.7", "--top-p", "0.75"]
    assert main([*args, "--plot", str(png), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    sampled = [c["sampled_probability"] for c in record["candidates"]]
    assert sampled[0] > record["candidates"][0]["probability"]  # T < 1 sharpens
    assert sampled[-1] == 0.0  # cut by top-p
    assert png.stat().st_size > 10_000
    timeline = tmp_path / "timeline.png"
    assert main(["generate", "Once upon a time", *model, "-n", "8", "-q",
                 "--plot", str(timeline)]) == 0  # fmt: skip
    assert timeline.stat().st_size > 10_000


def test_peek_and_score_read_a_text_as_generate_does(tiny_dir, tmp_path):
    """With a model that asks for BOS, a text prompt starts with it in generate, peek and score
    alike; BOS itself is never scored."""
    import shutil

    bos_dir = tmp_path / "tiny-bos"
    shutil.copytree(tiny_dir, bos_dir)
    config = bos_dir / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "add_bos_token": True}))
    model = smolgen.load(bos_dir)
    tok = model.tokenizer
    text = "hello world"
    ids = tok.encode_prompt(text)
    assert ids == [tok.bos_id, *tok.encode(text)] and tok.bos_id is not None
    used = model.generate(text, max_tokens=1, temperature=0, prefix_cache=False)
    assert used.usage.prompt_tokens == len(ids)
    assert model.peek(text, top_k=3) == model.peek(ids, top_k=3)
    scored = model.score(text)
    assert [t.id for t in scored.tokens] == ids[1:]
    assert scored == model.score(ids)
