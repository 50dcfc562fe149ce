"""Count tokens the way each model does, and compare tokenizers on the same text.

A token count is what an API bills and what a context window limits, and it differs from
tokenizer to tokenizer and from language to language. This module measures it instead of guessing
(``len(text) / 4`` is a rule of thumb that is often far off outside English):

- :func:`compare` tokenizes one text with several tokenizers and reports, for each, the token
  count, the pieces (bytes shown readably) and characters, words and bytes per token.
- :func:`language_report` measures how much more the same sentences cost in Korean, Japanese,
  Chinese, Arabic, Russian and as code than in English, for each tokenizer.
- :func:`train_bpe` trains a byte-level BPE tokenizer on your own texts; save it and load it back
  by path like any other ``tokenizer.json``.

Tokenizer specs understood by :func:`load_tokenizer`:

- ``"smollm2"`` (or ``"smollm2-135m-instruct"``): SmolLM2's tokenizer, from the model smolgen runs;
- ``"cl100k_base"`` (GPT-4, GPT-3.5) and ``"o200k_base"`` (GPT-4o, GPT-4o mini), or an OpenAI
  model name such as ``"gpt-4o"``: through tiktoken, offline, from rank files checked against the
  sha256 tiktoken pins;
- a path to a ``tokenizer.json`` (or a directory holding one), or a ``.gguf`` model file;
- an already loaded ``smolgen.Tokenizer``/``smolgen.Model``, ``tiktoken.Encoding`` or
  ``tokenizers.Tokenizer``.
"""

from __future__ import annotations

import builtins
import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from smolgen.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_TOKENIZERS",
    "SMOLLM2_ALIASES",
    "LanguageReport",
    "LanguageRow",
    "LanguageSamples",
    "Piece",
    "TextTokenizer",
    "TokenCount",
    "compare",
    "count",
    "language_report",
    "load_language_samples",
    "load_tokenizer",
    "readable",
    "train_bpe",
]

#: What :func:`compare` and :func:`language_report` use when no tokenizers are named.
DEFAULT_TOKENIZERS: tuple[str, ...] = ("smollm2", "cl100k_base", "o200k_base")

#: Names that mean SmolLM2's tokenizer, resolved through smolgen's model cache.
SMOLLM2_ALIASES: tuple[str, ...] = ("smollm2", "smollm2-135m-instruct", "smollm2-135m")
_SMOLLM2_MODEL = "smollm2-135m-instruct"


# --------------------------------------------------------------------------------------------
# Pieces and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One token of a tokenized text.

    Attributes:
        id: the token id.
        bytes: the exact bytes the token stands for. Byte-level tokenizers may cut a multi-byte
            UTF-8 character in the middle, so a piece is bytes, not necessarily text.
        text: the bytes decoded as UTF-8, with bytes that are not valid UTF-8 on their own shown
            as ``\\xNN`` escapes.
    """

    id: int
    bytes: bytes
    text: str

    @classmethod
    def from_bytes(cls, token_id: int, data: builtins.bytes) -> Piece:  # the field hides bytes
        """Make a piece from its id and bytes."""
        return cls(int(token_id), bytes(data), data.decode("utf-8", errors="backslashreplace"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: id, readable text and the bytes in hex."""
        return {"id": self.id, "text": self.text, "bytes": self.bytes.hex()}


_CONTROL_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def readable(text: str) -> str:
    """Show a piece so that whitespace and control characters are visible.

    Newlines, tabs and carriage returns become ``\\n``, ``\\t``, ``\\r``; other control
    characters become ``\\xNN``/``\\uNNNN``. Spaces are kept (a terminal table shows them by
    colouring each piece).
    """
    out: list[str] = []
    for ch in text:
        if ch in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[ch])
        elif ch == "\xa0":
            out.append("\\u00a0")
        elif not ch.isprintable() and ch != " ":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _word_count(text: str) -> int:
    """Whitespace-separated words. Chinese and Japanese put no spaces between words, so for them
    this counts phrases, not words: compare characters per token there instead."""
    return len(text.split())


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _text_sizes(texts: Iterable[str]) -> tuple[int, int, int]:
    """Characters, whitespace-separated words and UTF-8 bytes over ``texts``."""
    chars = words = n_bytes = 0
    for text in texts:
        chars += len(text)
        words += _word_count(text)
        n_bytes += len(text.encode("utf-8"))
    return chars, words, n_bytes


class _PerToken:
    """The ratios every token count reports; needs ``n_tokens``, ``n_chars`` and ``n_bytes``."""

    n_chars: int
    n_bytes: int
    if TYPE_CHECKING:  # a field in one subclass, a property in the other

        @property
        def n_tokens(self) -> int: ...

    @property
    def chars_per_token(self) -> float | None:
        """Characters per token (None when there are no tokens)."""
        return _ratio(self.n_chars, self.n_tokens)

    @property
    def bytes_per_token(self) -> float | None:
        """UTF-8 bytes per token."""
        return _ratio(self.n_bytes, self.n_tokens)

    @property
    def len_div_4(self) -> float:
        """The ``len(text) / 4`` estimate of the token count."""
        return self.n_chars / 4

    @property
    def len_div_4_error(self) -> float | None:
        """Actual tokens divided by the ``len(text) / 4`` estimate: 1.0 means the rule is right,
        2.0 means the text costs twice what the rule says. None when the text is empty."""
        return _ratio(self.n_tokens, self.len_div_4)


@dataclass(frozen=True)
class TokenCount(_PerToken):
    """One tokenizer's view of one text.

    Attributes:
        tokenizer: the tokenizer's name (``"cl100k_base"``, ``"smollm2"``, a file stem, ...).
        kind: where it comes from: ``"smolgen"``, ``"tiktoken"`` or ``"tokenizers"``.
        vocab_size: the tokenizer's vocabulary size.
        pieces: the tokens, in order.
        n_chars: characters (Unicode code points) in the text.
        n_words: whitespace-separated words in the text.
        n_bytes: UTF-8 bytes in the text.
    """

    tokenizer: str
    kind: str
    vocab_size: int
    pieces: tuple[Piece, ...]
    n_chars: int
    n_words: int
    n_bytes: int

    @property
    def n_tokens(self) -> int:
        """Number of tokens."""
        return len(self.pieces)

    @property
    def ids(self) -> list[int]:
        """The token ids."""
        return [p.id for p in self.pieces]

    @property
    def words_per_token(self) -> float | None:
        """Whitespace-separated words per token (the "0.75 words per token" rule)."""
        return _ratio(self.n_words, self.n_tokens)

    @property
    def tokens_per_word(self) -> float | None:
        """Tokens per whitespace-separated word (the "1 word ~1.3 tokens" rule)."""
        return _ratio(self.n_tokens, self.n_words)

    def to_dict(self, pieces: bool = True) -> dict[str, Any]:
        """JSON-ready form, with every derived figure."""
        out: dict[str, Any] = {
            "tokenizer": self.tokenizer,
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "n_tokens": self.n_tokens,
            "n_chars": self.n_chars,
            "n_words": self.n_words,
            "n_bytes": self.n_bytes,
            "chars_per_token": self.chars_per_token,
            "words_per_token": self.words_per_token,
            "tokens_per_word": self.tokens_per_word,
            "bytes_per_token": self.bytes_per_token,
            "len_div_4": self.len_div_4,
            "len_div_4_error": self.len_div_4_error,
        }
        if pieces:
            out["ids"] = self.ids
            out["pieces"] = [p.to_dict() for p in self.pieces]
        return out


# --------------------------------------------------------------------------------------------
# Tokenizer adapters: one small interface over smolgen, tiktoken and tokenizers
# --------------------------------------------------------------------------------------------


@runtime_checkable
class TextTokenizer(Protocol):
    """What this module needs from a tokenizer."""

    name: str
    kind: str

    @property
    def vocab_size(self) -> int:
        """Vocabulary size."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, special-token text treated as plain text."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``."""
        ...

    def pieces(self, text: str) -> list[Piece]:
        """The tokens of ``text`` with their bytes."""
        ...


class _SmolgenTokenizer:
    """SmolLM2's tokenizer from smolgen's core (``smolgen.Tokenizer``)."""

    kind = "smolgen"

    def __init__(self, inner: Any, name: str) -> None:
        self.inner = inner
        self.name = name

    @property
    def vocab_size(self) -> int:
        return int(self.inner.vocab_size)

    def encode(self, text: str) -> list[int]:
        return list(self.inner.encode(text, special=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.inner.decode(list(ids)))

    def pieces(self, text: str) -> list[Piece]:
        return [Piece.from_bytes(p.id, p.bytes) for p in self.inner.tokens(text, special=False)]


class _TiktokenTokenizer:
    """An OpenAI encoding through tiktoken."""

    kind = "tiktoken"

    def __init__(self, inner: Any, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or str(inner.name)

    @property
    def vocab_size(self) -> int:
        return int(self.inner.n_vocab)

    def encode(self, text: str) -> list[int]:
        return list(self.inner.encode_ordinary(text))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.inner.decode(list(ids)))

    def pieces(self, text: str) -> list[Piece]:
        return [
            Piece.from_bytes(i, self.inner.decode_single_token_bytes(i)) for i in self.encode(text)
        ]


def _gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-printable-character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _uses_byte_level(config: dict[str, Any]) -> bool:
    """Whether a ``tokenizer.json`` decodes with GPT-2's byte-level mapping."""

    def has(node: Any) -> bool:
        if not isinstance(node, dict):
            return False
        if node.get("type") == "ByteLevel":
            return True
        return any(has(child) for child in node.get("decoders", []) or [])

    return has(config.get("decoder"))


class _HFTokenizer:
    """A ``tokenizer.json`` through the ``tokenizers`` library."""

    kind = "tokenizers"

    def __init__(self, inner: Any, name: str) -> None:
        self.inner = inner
        self.name = name
        config = json.loads(inner.to_str())
        self._byte_decoder = _gpt2_byte_decoder() if _uses_byte_level(config) else None

    @property
    def vocab_size(self) -> int:
        return int(self.inner.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.inner.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.inner.decode(list(ids), skip_special_tokens=False))

    def _token_bytes(self, token_id: int) -> bytes:
        token = self.inner.id_to_token(token_id)
        if token is None:
            return b""
        if self._byte_decoder is not None and all(c in self._byte_decoder for c in token):
            return bytes(self._byte_decoder[c] for c in token)
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:  # SentencePiece byte fallback, e.g. <0xE3>
                return bytes([int(token[3:5], 16)])
            except ValueError:
                pass
        return self.decode([token_id]).encode("utf-8")

    def pieces(self, text: str) -> list[Piece]:
        return [Piece.from_bytes(i, self._token_bytes(i)) for i in self.encode(text)]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer as a ``tokenizer.json`` that :func:`load_tokenizer` reads back.

        ``path`` is a file name, or a directory (an existing one, or a name without a suffix)
        to write ``tokenizer.json`` into. Returns the file written.
        """
        out = Path(path)
        if out.is_dir() or not out.suffix:
            out = out / "tokenizer.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.inner.save(str(out))
        return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

#: A tokenizer name, a path, or an already loaded tokenizer object.
TokenizerSpec = Any

_load_lock = threading.Lock()
_loaded: dict[str, TextTokenizer] = {}


def _load_smolgen(spec: str, name: str) -> _SmolgenTokenizer:
    try:
        from smolgen import Tokenizer
    except ImportError as exc:
        raise ImportError(
            f"cannot load {name!r}: smolgen's native tokenizer is not available ({exc})"
        ) from exc
    return _SmolgenTokenizer(Tokenizer.load(spec), name)


def _tokenizers_library(purpose: str) -> Any:
    """The ``tokenizers`` package, or an error that says how to install it."""
    try:
        import tokenizers
    except ImportError as exc:
        raise InvalidArgumentError(
            f"{purpose} needs the 'tokenizers' package: pip install 'smolgen[tokens]'"
        ) from exc
    return tokenizers


def _load_hf_file(path: Path, name: str) -> _HFTokenizer:
    lib = _tokenizers_library("reading a tokenizer.json")
    try:
        inner = lib.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise InvalidArgumentError(f"{path}: not a readable tokenizer.json ({exc})") from exc
    return _HFTokenizer(inner, name)


def _openai_encoding_name(spec: str) -> str | None:
    """The tiktoken encoding behind ``spec`` (an encoding name or an OpenAI model name)."""
    from smolgen.lab._openai_bpe import SUPPORTED_ENCODINGS

    if spec in SUPPORTED_ENCODINGS:
        return spec
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        name = encoding_name_for_model(spec)
    except KeyError:
        return None
    return name if name in SUPPORTED_ENCODINGS else None


def _load_path(path: Path) -> TextTokenizer:
    if path.is_dir():
        candidate = path / "tokenizer.json"
        if candidate.is_file():
            return _load_hf_file(candidate, path.name)
        return _load_smolgen(str(path), path.name)
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such file")
    if path.suffix == ".gguf":
        return _load_smolgen(str(path), path.stem)
    name = path.parent.name if path.stem == "tokenizer" and path.parent.name else path.stem
    return _load_hf_file(path, name)


def _wrap_object(obj: Any) -> TextTokenizer | None:
    """Wrap an already loaded tokenizer object, or return None if it is not one."""
    if isinstance(obj, (_SmolgenTokenizer, _TiktokenTokenizer, _HFTokenizer)):
        return obj
    module = type(obj).__module__ or ""
    if module.startswith("tiktoken"):
        return _TiktokenTokenizer(obj)
    if module.startswith("tokenizers"):
        return _HFTokenizer(obj, "tokenizer")
    inner = getattr(obj, "tokenizer", obj)  # a smolgen.Model carries its tokenizer
    if all(hasattr(inner, a) for a in ("encode", "decode", "tokens", "vocab_size")):
        return _SmolgenTokenizer(inner, "smollm2")
    return None


def load_tokenizer(spec: TokenizerSpec) -> TextTokenizer:
    """Load a tokenizer by name, path or object (see the module docstring for the forms).

    Tokenizers named by name (``smollm2``, ``cl100k_base``, ...) are loaded once and shared;
    files are read again on every call, so a tokenizer saved anew is picked up.

    Raises:
        InvalidArgumentError: the spec names nothing loadable.
        smolgen.lab._openai_bpe.BpeDataError: an OpenAI rank file is missing or fails its sha256.
    """
    if not isinstance(spec, (str, os.PathLike)):
        wrapped = _wrap_object(spec)
        if wrapped is None:
            raise InvalidArgumentError(f"not a tokenizer: {type(spec).__name__}")
        return wrapped

    if isinstance(spec, str):
        key = spec.lower()
        with _load_lock:
            if key in _loaded:
                return _loaded[key]
        named: TextTokenizer | None = None
        if key in SMOLLM2_ALIASES:
            named = _load_smolgen(_SMOLLM2_MODEL, "smollm2")
        elif (encoding := _openai_encoding_name(key)) is not None:
            from smolgen.lab._openai_bpe import load_encoding

            named = _TiktokenTokenizer(load_encoding(encoding), encoding)
        if named is not None:
            with _load_lock:
                return _loaded.setdefault(key, named)

    path = Path(spec).expanduser()
    if not path.exists() and isinstance(spec, str) and os.sep not in spec and "." not in spec:
        raise InvalidArgumentError(
            f"unknown tokenizer {spec!r}: use smollm2, cl100k_base, o200k_base, an OpenAI "
            "model name, or a path to a tokenizer.json or .gguf file"
        )
    return _load_path(path)


# --------------------------------------------------------------------------------------------
# Counting and comparing
# --------------------------------------------------------------------------------------------


def count(text: str, tokenizer: TokenizerSpec = "smollm2") -> TokenCount:
    """Tokenize ``text`` with one tokenizer and return the count, pieces and ratios."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a str, not {type(text).__name__}")
    tok = load_tokenizer(tokenizer)
    n_chars, n_words, n_bytes = _text_sizes([text])
    return TokenCount(
        tokenizer=tok.name,
        kind=tok.kind,
        vocab_size=tok.vocab_size,
        pieces=tuple(tok.pieces(text)),
        n_chars=n_chars,
        n_words=n_words,
        n_bytes=n_bytes,
    )


def compare(
    text: str, tokenizers: Iterable[TokenizerSpec] = DEFAULT_TOKENIZERS
) -> dict[str, TokenCount]:
    """Tokenize ``text`` with each tokenizer.

    Args:
        text: the text to tokenize.
        tokenizers: specs accepted by :func:`load_tokenizer`.

    Returns:
        ``{tokenizer name: TokenCount}`` in the order given. When two specs load tokenizers with
        the same name, the later one's key gets a ``#2``-style suffix.
    """
    out: dict[str, TokenCount] = {}
    for spec in tokenizers:
        result = count(text, spec)
        key, n = result.tokenizer, 2
        while key in out:
            key, n = f"{result.tokenizer}#{n}", n + 1
        out[key] = result
    return out


# --------------------------------------------------------------------------------------------
# The multilingual report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageSamples:
    """Sentences with the same meaning in several languages.

    Attributes:
        reference: the language others are measured against (``"en"``).
        names: ``{code: display name}``.
        texts: ``{code: [text, ...]}``; the i-th text of every language says the same thing.
    """

    reference: str
    names: dict[str, str]
    texts: dict[str, list[str]]

    def __post_init__(self) -> None:
        if self.reference not in self.texts:
            raise InvalidArgumentError(f"reference language {self.reference!r} has no texts")
        n = len(self.texts[self.reference])
        for code, texts in self.texts.items():
            if len(texts) != n:
                raise InvalidArgumentError(
                    f"language {code!r} has {len(texts)} texts, {self.reference!r} has {n}: "
                    "the i-th text of each language must say the same thing"
                )


def load_language_samples(path: str | os.PathLike[str] | None = None) -> LanguageSamples:
    """Read multilingual samples: smolgen's own set, or a JSON file of the same shape.

    The shape: ``{"reference": "en", "languages": [{"code": "en", "name": "English",
    "texts": [...]}, ...]}``.
    """
    if path is None:
        raw = (resources.files("smolgen.lab") / "data" / "languages.json").read_text("utf-8")
    else:
        try:
            raw = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"{path}: cannot read language samples ({exc})") from exc
    try:
        doc = json.loads(raw)
        names = {lang["code"]: lang.get("name", lang["code"]) for lang in doc["languages"]}
        texts = {lang["code"]: list(lang["texts"]) for lang in doc["languages"]}
        reference = doc.get("reference", "en")
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"malformed language samples: {exc}") from exc
    return LanguageSamples(reference=reference, names=names, texts=texts)


@dataclass(frozen=True)
class LanguageRow(_PerToken):
    """One language, one tokenizer: totals over all its sample texts.

    Attributes:
        language: the language code.
        name: its display name.
        tokenizer: the tokenizer's name.
        n_tokens: tokens over all texts.
        n_chars: characters over all texts.
        n_bytes: UTF-8 bytes over all texts.
        n_words: whitespace-separated words over all texts.
        reference_tokens: the reference language's tokens with the same tokenizer.
    """

    language: str
    name: str
    tokenizer: str
    n_tokens: int
    n_chars: int
    n_bytes: int
    n_words: int
    reference_tokens: int

    @property
    def relative_cost(self) -> float | None:
        """Tokens relative to the reference language for the same meaning (English = 1.0)."""
        return _ratio(self.n_tokens, self.reference_tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "language": self.language,
            "name": self.name,
            "tokenizer": self.tokenizer,
            "n_tokens": self.n_tokens,
            "n_chars": self.n_chars,
            "n_bytes": self.n_bytes,
            "n_words": self.n_words,
            "reference_tokens": self.reference_tokens,
            "relative_cost": self.relative_cost,
            "chars_per_token": self.chars_per_token,
            "bytes_per_token": self.bytes_per_token,
            "len_div_4": self.len_div_4,
            "len_div_4_error": self.len_div_4_error,
        }


@dataclass(frozen=True)
class LanguageReport:
    """Each language's token cost relative to the reference language, for each tokenizer."""

    reference: str
    tokenizers: tuple[str, ...]
    rows: tuple[LanguageRow, ...] = field(default_factory=tuple)

    def row(self, language: str, tokenizer: str) -> LanguageRow:
        """The row for one language and tokenizer."""
        for r in self.rows:
            if r.language == language and r.tokenizer == tokenizer:
                return r
        languages = ", ".join(dict.fromkeys(r.language for r in self.rows))
        raise InvalidArgumentError(
            f"no row for language {language!r} and tokenizer {tokenizer!r}; "
            f"languages: {languages}; tokenizers: {', '.join(self.tokenizers)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "reference": self.reference,
            "tokenizers": list(self.tokenizers),
            "rows": [r.to_dict() for r in self.rows],
        }


def language_report(
    tokenizers: Iterable[TokenizerSpec] = DEFAULT_TOKENIZERS,
    samples: LanguageSamples | str | os.PathLike[str] | None = None,
) -> LanguageReport:
    """Measure the "same sentence costs more in Korean" effect.

    Every language's texts are tokenized with every tokenizer; each row gives the total tokens
    and their ratio to the reference language's total for the same meaning, plus how far the
    ``len(text) / 4`` rule is off.
    """
    if not isinstance(samples, LanguageSamples):
        samples = load_language_samples(samples)
    loaded = [load_tokenizer(spec) for spec in tokenizers]
    sizes = {code: _text_sizes(texts) for code, texts in samples.texts.items()}
    rows: list[LanguageRow] = []
    for tok in loaded:
        totals = {
            code: sum(len(tok.encode(t)) for t in texts) for code, texts in samples.texts.items()
        }
        for code, (n_chars, n_words, n_bytes) in sizes.items():
            rows.append(
                LanguageRow(
                    language=code,
                    name=samples.names.get(code, code),
                    tokenizer=tok.name,
                    n_tokens=totals[code],
                    n_chars=n_chars,
                    n_bytes=n_bytes,
                    n_words=n_words,
                    reference_tokens=totals[samples.reference],
                )
            )
    return LanguageReport(
        reference=samples.reference, tokenizers=tuple(t.name for t in loaded), rows=tuple(rows)
    )


# --------------------------------------------------------------------------------------------
# Training your own
# --------------------------------------------------------------------------------------------


def train_bpe(
    texts_or_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    vocab_size: int = 8000,
    *,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = ("<|endoftext|>",),
    name: str = "trained-bpe",
) -> TextTokenizer:
    """Train a byte-level BPE tokenizer (the GPT-2 / SmolLM2 kind) on your own data.

    Args:
        texts_or_files: texts (``str``) and/or files (``pathlib.Path`` or other path objects).
            A plain ``str`` is always a text; wrap a file name in ``Path`` to train on the file.
        vocab_size: the vocabulary to reach, counting the 256 byte tokens and the specials.
        min_frequency: merges seen fewer times than this are not learned.
        special_tokens: tokens added whole, first in the vocabulary.
        name: the name reported in comparisons.

    Returns:
        A tokenizer usable with :func:`count` and :func:`compare`; ``.save(path)`` writes a
        ``tokenizer.json`` that :func:`load_tokenizer` reads back.

    Every text round-trips: byte-level BPE can spell any byte sequence, so
    ``decode(encode(text)) == text`` holds even for languages absent from the training data.
    """
    if vocab_size < 256 + len(special_tokens):
        raise InvalidArgumentError(
            f"vocab_size must be at least {256 + len(special_tokens)} (256 bytes + specials)"
        )
    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [texts_or_files]
    texts: list[str] = []
    for item in texts_or_files:
        if isinstance(item, os.PathLike):
            path = Path(item)
            if not path.is_file():
                raise InvalidArgumentError(f"{path}: no such file")
            texts.append(path.read_text("utf-8"))
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise InvalidArgumentError(f"expected a str or a path, not {type(item).__name__}")
    if not texts:
        raise InvalidArgumentError("nothing to train on")

    lib = _tokenizers_library("training a tokenizer")
    tokenizer = lib.Tokenizer(lib.models.BPE())
    tokenizer.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = lib.decoders.ByteLevel()
    trainer = lib.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return _HFTokenizer(tokenizer, name)
