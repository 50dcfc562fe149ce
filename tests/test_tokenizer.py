"""The tokenizer built from GGUF metadata against llama.cpp's own tokenization."""

from __future__ import annotations

import pytest

import smolgen
import tiny_llama


def test_matches_llama_cpp_on_every_fixture(smollm2, tokenize_vectors):
    """The fixtures were made with llama.cpp parsing special tokens."""
    for case in tokenize_vectors:
        assert smollm2.tokenize(case["text"], special=True) == case["ids"], case["text"]


def test_pieces_match_llama_cpp(smollm2, tokenize_vectors):
    """llama.cpp prints control tokens as empty pieces; smolgen shows their text."""
    for case in tokenize_vectors:
        pieces = smollm2.tokens(case["text"], special=True)
        assert [p.id for p in pieces] == case["ids"]
        pairs = zip(case["ids"], case["pieces"], strict=True)
        expected = [text or smollm2.tokenizer.piece(i).text for i, text in pairs]
        assert [p.text for p in pieces] == expected, case["text"]
        assert b"".join(p.bytes for p in pieces) == case["text"].encode()


def test_detokenize_round_trips(smollm2, tokenize_vectors):
    for case in tokenize_vectors:
        assert smollm2.detokenize(case["ids"]) == case["text"]


def test_digits_are_split_before_the_byte_level_regex(smollm2):
    pieces = [p.text for p in smollm2.tokens("line\n\n8 items")]
    assert pieces == ["line", "\n\n", "8", " items"]


def test_special_tokens_parse_only_when_asked(smollm2, smollm2_gguf):
    text = "<|im_start|>user\nhi<|im_end|>"
    assert smollm2.tokenize(text, special=True)[0] == 1
    assert smollm2.tokenize(text, special=True)[-1] == 2
    plain = smollm2.tokenize(text, special=False)
    assert 1 not in plain and 2 not in plain
    assert smollm2.detokenize(plain) == text
    # By default user text never turns into control tokens, whichever way it is tokenized.
    tok = smolgen.Tokenizer.load(smollm2_gguf)
    assert smollm2.tokenize(text) == tok.encode(text) == smollm2.tokenizer.encode(text) == plain
    assert [p.id for p in smollm2.tokens(text)] == [p.id for p in tok.tokens(text)] == plain


def test_no_bos_is_added(smollm2):
    assert smollm2.tokenize("Once upon a time") == [6403, 1980, 253, 655]


def test_tokenizer_alone_equals_the_models(smollm2, smollm2_gguf, tokenize_vectors):
    tok = smolgen.Tokenizer.load(smollm2_gguf)
    assert tok.vocab_size == 49152
    assert tok.eos_id == 2
    assert 2 in tok.end_of_generation_ids and 0 in tok.end_of_generation_ids
    assert "<|im_start|>" in (tok.chat_template or "")
    for case in tokenize_vectors:
        assert tok.encode(case["text"], special=True) == case["ids"]


def test_gguf_and_tokenizer_json_agree(tiny_dir, tiny_gguf):
    from_json = smolgen.Tokenizer.load(tiny_dir)
    from_gguf = smolgen.Tokenizer.load(tiny_gguf)
    for text in ["hello world", "hello 2024 worlds!", "<|im_start|>hello<|im_end|>", "é東\n\n"]:
        ids = from_json.encode(text, special=True)
        assert from_gguf.encode(text, special=True) == ids, text
        assert from_gguf.decode(ids) == from_json.decode(ids) == text
    vocab = tiny_llama.vocabulary()
    expected = [vocab.index(t) for t in ["hell", "o", "\u0120wor", "l", "d"]]
    assert from_gguf.encode("hello world") == expected


def test_invalid_token_ids_raise_typed_errors(smollm2):
    with pytest.raises(smolgen.InvalidArgumentError):
        smollm2.detokenize([49152])
    with pytest.raises(smolgen.InvalidArgumentError):
        smollm2.detokenize([-1])
    with pytest.raises(smolgen.InvalidArgumentError):
        smollm2.tokenizer.piece(10**12)
