//! Text <-> token ids, through the `tokenizers` crate's pipeline.
//!
//! From a `tokenizer.json` as it is; from a GGUF, rebuilt from its metadata: the byte-level BPE
//! vocabulary and merges (`tokenizer.ggml.tokens` / `.merges`), the token types (control tokens
//! become special added tokens) and the pre-tokenizer named by `tokenizer.ggml.pre`. llama.cpp's
//! `smollm` pre-tokenizer splits every digit on its own before the GPT-2 byte-level regex runs;
//! `tokenizers`' `Digits(individual)` + `ByteLevel` is the same pipeline. A BPE vocabulary runs
//! as our own compact model (`bpe.rs`), in a quarter of the memory of `tokenizers`' own.
//!
//! Detokenizing works on raw bytes: every token maps to the bytes it stands for, so a caller can
//! stream text without ever splitting a UTF-8 character (see [`crate::generate::utf8::Utf8Stream`]).

mod bpe;

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{
    AddedToken, AddedVocabulary, DecoderWrapper, Model, NormalizerWrapper, OffsetReferential,
    OffsetType, PostProcessorWrapper, PreTokenizer, PreTokenizerWrapper, TokenizerImpl,
};

use self::bpe::{CompactBpe, Merging, Vocabulary};

use crate::error::{Error, Result};
use crate::load::config::MAX_VOCAB;
use crate::load::gguf::GgufFile;

/// llama.cpp's `llama_token_type`.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Names that end a turn or a document in the model families we load.
const END_OF_GENERATION_NAMES: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "</s>",
];

/// One token of a tokenized text, for showing what the model sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPiece {
    pub id: u32,
    /// The bytes the token stands for.
    pub bytes: Vec<u8>,
    /// The bytes as text, invalid UTF-8 shown as `\xNN` escapes.
    pub text: String,
}

/// `tokenizers`' pipeline (normalizer, pre-tokenizer, added tokens) over our vocabulary.
type Pipeline = TokenizerImpl<
    Vocabulary,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Every token's bytes, back to back: token `id` is `bytes[ends[id - 1]..ends[id]]`.
struct TokenBytes {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl TokenBytes {
    fn new(tokens: impl IntoIterator<Item = Vec<u8>>) -> Result<Self> {
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        for token in tokens {
            bytes.extend_from_slice(&token);
            ends.push(
                u32::try_from(bytes.len())
                    .map_err(|_| Error::Tokenizer("the tokens' bytes pass 4 GiB".into()))?,
            );
        }
        Ok(TokenBytes { bytes, ends })
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let end = *self.ends.get(id as usize)? as usize;
        let start = match id.checked_sub(1) {
            Some(before) => self.ends[before as usize] as usize,
            None => 0,
        };
        Some(&self.bytes[start..end])
    }

    fn longest(&self) -> usize {
        (0..self.len() as u32)
            .filter_map(|id| self.get(id).map(<[u8]>::len))
            .max()
            .unwrap_or(0)
    }
}

pub struct Tokenizer {
    /// Parses special tokens out of the text (`<|im_start|>` -> id 1).
    with_special: Pipeline,
    /// The added tokens of `with_special`, set to treat special-token text as plain text. Only
    /// this part differs between the two ways of encoding: a second `tokenizers::Tokenizer` would
    /// hold another copy of the vocabulary.
    plain_added: AddedVocabulary,
    token_bytes: TokenBytes,
    /// The byte length of the longest token (at least 1): see [`Tokenizer::fewest_tokens`].
    longest_token_bytes: usize,
    special: Vec<bool>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Prepend BOS to a text prompt (per the model's own metadata).
    pub add_bos: bool,
    /// Tokens that end generation: EOS and the end-of-turn/document tokens the vocabulary has.
    pub end_of_generation: Vec<u32>,
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf
            .get("tokenizer.ggml.model")
            .and_then(|v| v.as_str())
            .ok_or_else(|| gguf.malformed("missing metadata key `tokenizer.ggml.model`"))?;
        if model != "gpt2" {
            return Err(gguf.unsupported(format!(
                "tokenizer model `{model}` (smolgen reads byte-level BPE, `gpt2`, from GGUF; \
                 load a Hugging Face directory with tokenizer.json instead)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = gguf
                .get(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| gguf.malformed(format!("missing array `{key}`")))?;
            arr.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| gguf.malformed(format!("`{key}` holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges_raw = strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => v
                .as_array()
                .map(|a| a.iter().map(|x| x.as_i64().unwrap_or(1)).collect())
                .ok_or_else(|| gguf.malformed("`tokenizer.ggml.token_type` is not an array"))?,
        };
        if types.len() != tokens.len() {
            return Err(gguf.malformed(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }

        let mut merges = Vec::with_capacity(merges_raw.len());
        for m in &merges_raw {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| gguf.malformed(format!("merge `{m}` is not two tokens")))?;
            merges.push((a, b));
        }
        let bpe = CompactBpe::new(tokens.iter().map(Some), merges, false)
            .map_err(|e| gguf.malformed(format!("BPE: {e}")))?;

        let pre = gguf
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let byte_level = ByteLevel::new(false, false, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" | "default" => byte_level.into(),
            other => {
                return Err(gguf.unsupported(format!(
                    "GGUF pre-tokenizer `{other}` (supported: smollm, gpt2, default)"
                )))
            }
        };

        let mut tk = Pipeline::new(Vocabulary::Bpe(bpe));
        tk.with_pre_tokenizer(Some(pre_tokenizer));
        tk.with_decoder(Some(ByteLevelDecoder::default()));
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &ty)| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
            .map(|(t, &ty)| AddedToken::from(t.clone(), ty == TOKEN_TYPE_CONTROL))
            .collect();
        tk.add_special_tokens(added).map_err(tok_err)?;

        let special: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect();
        let byte_decoder = byte_decoder();
        let token_bytes =
            TokenBytes::new(tokens.iter().zip(&special).map(|(tok, &is_special)| {
                if is_special {
                    tok.as_bytes().to_vec()
                } else {
                    unmap_byte_level(tok, &byte_decoder)
                }
            }))?;

        let id_key = |key: &str| -> Option<u32> {
            gguf.get(key)
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < tokens.len())
        };
        let eos_id = id_key("tokenizer.ggml.eos_token_id");
        let mut end_of_generation: Vec<u32> = eos_id.into_iter().collect();
        if let Some(eot) = id_key("tokenizer.ggml.eot_token_id") {
            end_of_generation.push(eot);
        }
        for name in END_OF_GENERATION_NAMES {
            if let Some(id) = tokens.iter().position(|t| t == name) {
                if special[id] {
                    end_of_generation.push(id as u32);
                }
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        Self::assemble(
            tk,
            token_bytes,
            special,
            id_key("tokenizer.ggml.bos_token_id"),
            eos_id,
            gguf.get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            end_of_generation,
            gguf.get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        )
    }

    /// From a Hugging Face `tokenizer.json`, with `tokenizer_config.json` beside it when present
    /// (special tokens, BOS policy, chat template).
    pub fn from_hf_files(
        tokenizer_json: &Path,
        config: Option<&serde_json::Value>,
        chat_template: Option<String>,
    ) -> Result<Self> {
        let malformed = |e: &dyn std::fmt::Display| {
            Error::malformed(tokenizer_json, format!("tokenizer.json: {e}"))
        };
        let bytes = std::fs::read(tokenizer_json).map_err(|e| Error::Io {
            path: tokenizer_json.to_path_buf(),
            source: e,
        })?;
        // `tokenizers` panics on a syntax error inside the decoder (its `expect("Helper")`), and
        // its nesting is bounded only there: what is not JSON, or nests deeper than serde_json's
        // limit, is refused before it gets the file.
        serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| malformed(&e))?;
        let tk = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| malformed(&e))?;
        // The ids, not their count, size the vocabulary: a file may skip ids or number a token
        // past the others, and the model needs an embedding for each id the tokenizer makes.
        let vocab_size = match tk.get_vocab(true).into_iter().max_by_key(|(_, id)| *id) {
            Some((token, id)) if id as usize >= MAX_VOCAB => {
                return Err(malformed(&format!(
                    "token {token:?} has id {id}, beyond any vocabulary ({MAX_VOCAB} ids)"
                )))
            }
            Some((_, id)) => tk.get_vocab_size(true).max(id as usize + 1),
            None => 0,
        };
        let added = tk.get_added_tokens_decoder();
        let byte_level = matches!(
            tk.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        let byte_decoder = byte_decoder();
        let mut token_bytes = Vec::with_capacity(vocab_size);
        let mut special = Vec::with_capacity(vocab_size);
        for id in 0..vocab_size as u32 {
            let tok = tk.id_to_token(id).unwrap_or_default();
            let added_token = added.get(&id);
            special.push(added_token.is_some_and(|t| t.special));
            token_bytes.push(if added_token.is_some() {
                tok.as_bytes().to_vec()
            } else if byte_level {
                unmap_byte_level(&tok, &byte_decoder)
            } else {
                sentencepiece_bytes(&tok)
            });
        }
        let token_id = |key: &str| -> Option<u32> {
            let v = config?.get(key)?;
            let name = v.as_str().or_else(|| v.get("content")?.as_str())?;
            tk.token_to_id(name)
        };
        let eos_id = token_id("eos_token");
        let mut end_of_generation: Vec<u32> = eos_id.into_iter().collect();
        for name in END_OF_GENERATION_NAMES {
            if let Some(id) = tk.token_to_id(name) {
                if special.get(id as usize).copied().unwrap_or(false) {
                    end_of_generation.push(id);
                }
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        let bos_id = token_id("bos_token");
        let add_bos = config
            .and_then(|c| c.get("add_bos_token"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let chat_template =
            chat_template.or_else(|| config?.get("chat_template")?.as_str().map(str::to_owned));
        // The same pipeline over our vocabulary; `tokenizers`' own model is dropped. Truncation
        // and padding, which a `tokenizer.json` may ask for, are left out: a prompt is never
        // cut or padded.
        let vocabulary = Vocabulary::from_model(tk.get_model()).map_err(|e| malformed(&e))?;
        let mut pipeline = Pipeline::new(vocabulary);
        pipeline
            .with_normalizer(tk.get_normalizer().cloned())
            .map_err(|e| malformed(&e))?;
        pipeline
            .with_pre_tokenizer(tk.get_pre_tokenizer().cloned())
            .with_post_processor(tk.get_post_processor().cloned())
            .with_decoder(tk.get_decoder().cloned())
            .with_added_vocabulary(tk.get_added_vocabulary().clone());
        drop(tk);
        Self::assemble(
            pipeline,
            TokenBytes::new(token_bytes)?,
            special,
            bos_id,
            eos_id,
            add_bos,
            end_of_generation,
            chat_template,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        with_special: Pipeline,
        token_bytes: TokenBytes,
        special: Vec<bool>,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        add_bos: bool,
        end_of_generation: Vec<u32>,
        chat_template: Option<String>,
    ) -> Result<Self> {
        let mut plain_added = with_special.get_added_vocabulary().clone();
        plain_added.set_encode_special_tokens(true);
        let longest_token_bytes = token_bytes.longest().max(1);
        Ok(Tokenizer {
            with_special,
            plain_added,
            token_bytes,
            longest_token_bytes,
            special,
            bos_id,
            eos_id,
            add_bos: add_bos && bos_id.is_some(),
            end_of_generation,
            chat_template,
        })
    }

    /// A `.gguf` file (its metadata only, no weights), a `tokenizer.json`, or a Hugging Face
    /// model directory holding one.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let config = match std::fs::read_to_string(path.join("tokenizer_config.json")) {
                Ok(s) => Some(serde_json::from_str::<serde_json::Value>(&s).map_err(|e| {
                    Error::malformed(path.join("tokenizer_config.json"), e.to_string())
                })?),
                Err(_) => None,
            };
            let template = std::fs::read_to_string(path.join("chat_template.jinja")).ok();
            let json = path.join("tokenizer.json");
            if !json.exists() {
                return Err(Error::ModelNotFound(json));
            }
            Self::from_hf_files(&json, config.as_ref(), template)
        } else if path.extension().is_some_and(|e| e == "json") {
            if !path.exists() {
                return Err(Error::ModelNotFound(path.to_path_buf()));
            }
            Self::from_hf_files(path, None, None)
        } else {
            Self::from_gguf(&GgufFile::open(path)?)
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// `special`: parse special-token text such as `<|im_start|>` into its id. Never adds BOS.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        // `tokenizers::Tokenizer::encode`'s steps with the added vocabulary asked for, ids only
        // (its post-processing adds nothing when special tokens are not asked for).
        let tk = &self.with_special;
        let added = if special {
            tk.get_added_vocabulary()
        } else {
            &self.plain_added
        };
        let mut words = added.extract_and_normalize(tk.get_normalizer(), text);
        if let Some(pre_tokenizer) = tk.get_pre_tokenizer() {
            pre_tokenizer.pre_tokenize(&mut words).map_err(tok_err)?;
        }
        let mut ids = Vec::new();
        match tk.get_model() {
            Vocabulary::Bpe(bpe) => {
                let mut merging = Merging::default();
                for (word, _, tokens) in
                    words.get_splits(OffsetReferential::Original, OffsetType::None)
                {
                    match tokens {
                        Some(added) => ids.extend(added.iter().map(|t| t.id)),
                        None => bpe.encode_word(word, &mut merging, &mut ids),
                    }
                }
            }
            Vocabulary::Other(model) => {
                words
                    .tokenize(|word| model.tokenize(word.get()))
                    .map_err(tok_err)?;
                let splits = words.get_splits(OffsetReferential::Original, OffsetType::None);
                ids.extend(
                    splits
                        .into_iter()
                        .flat_map(|(_, _, t)| t.iter().flatten().map(|t| t.id)),
                );
            }
        }
        Ok(ids)
    }

    /// What a text prompt becomes for generation: BOS first when the model asks for it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend(self.encode(text, true)?);
        Ok(ids)
    }

    /// [`Tokenizer::encode_prompt`] for a model whose window holds `window` tokens, of which the
    /// caller needs `room` after the prompt. A text that cannot fit however it is split is
    /// refused before tokenizing ([`Tokenizer::check_length`]): the cost of a refusal is in
    /// the text's length, not in its tokens.
    pub fn encode_prompt_within(&self, text: &str, window: usize, room: usize) -> Result<Vec<u32>> {
        let bos = usize::from(self.add_bos);
        self.check_length(text, bos, window, room, "prompt")?;
        self.encode_prompt(text)
    }

    /// The byte length of the vocabulary's longest token, special tokens' text included.
    pub fn longest_token_bytes(&self) -> usize {
        self.longest_token_bytes
    }

    /// The fewest tokens `text` can become: each token stands for at most
    /// [`Tokenizer::longest_token_bytes`] of its bytes. This holds for tokenizers whose tokens
    /// each cover the bytes of the text they stand for (byte-level BPE, SentencePiece with byte
    /// fallback), every one smolgen builds.
    pub fn fewest_tokens(&self, text: &str) -> usize {
        text.len().div_ceil(self.longest_token_bytes)
    }

    /// Refuses, without tokenizing it, a `text` whose every tokenization, after `leading`
    /// tokens (BOS), leaves fewer than `room` of `window` tokens free, as
    /// [`Error::ContextLengthExceeded`] with the byte length and the lower bound. A text let
    /// through may still not fit once tokenized.
    pub fn check_length(
        &self,
        text: &str,
        leading: usize,
        window: usize,
        room: usize,
        subject: &'static str,
    ) -> Result<()> {
        let fewest = self.fewest_tokens(text).saturating_add(leading);
        if fewest.saturating_add(room) <= window {
            return Ok(());
        }
        Err(Error::text_exceeds_context(
            window,
            text.len(),
            fewest,
            subject,
        ))
    }

    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.token_bytes.get(id).ok_or_else(|| {
            Error::invalid(format!(
                "token id {id} is outside the vocabulary (size {})",
                self.vocab_size()
            ))
        })
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// The text of `ids`, special tokens included as their text; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    pub fn piece(&self, id: u32) -> Result<TokenPiece> {
        let bytes = self.token_bytes(id)?.to_vec();
        Ok(TokenPiece {
            id,
            text: escape_invalid_utf8(&bytes),
            bytes,
        })
    }

    pub fn pieces(&self, text: &str, special: bool) -> Result<Vec<TokenPiece>> {
        self.encode(text, special)?
            .into_iter()
            .map(|id| self.piece(id))
            .collect()
    }
}

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others are shifted to
/// code points from U+0100 up. Returns char -> byte.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

fn unmap_byte_level(token: &str, decoder: &std::collections::HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match decoder.get(&c) {
            Some(&b) => out.push(b),
            // Not from the byte-level alphabet: keep the character's own bytes.
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// SentencePiece vocabularies: `<0x0A>` byte tokens and `▁` for a space.
fn sentencepiece_bytes(token: &str) -> Vec<u8> {
    if let Some(hex) = token
        .strip_prefix("<0x")
        .and_then(|s| s.strip_suffix('>'))
        .filter(|h| h.len() == 2)
    {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    token.replace('\u{2581}', " ").into_bytes()
}

/// Valid UTF-8 as is; each byte of an invalid sequence as `\xNN`.
pub fn escape_invalid_utf8(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_round_trips() {
        let d = byte_decoder();
        assert_eq!(d.len(), 256);
        assert_eq!(unmap_byte_level("\u{120}world", &d), b" world");
        assert_eq!(unmap_byte_level("\u{10a}", &d), b"\n");
    }

    #[test]
    fn escapes_only_invalid_bytes() {
        assert_eq!(escape_invalid_utf8("é".as_bytes()), "é");
        assert_eq!(escape_invalid_utf8(&[0xc3]), "\\xc3");
        assert_eq!(escape_invalid_utf8(b"a\xe6\x9db"), "a\\xe6\\x9db");
    }

    /// A `tokenizer.json` holding `json`, loaded.
    fn from_json(label: &str, json: &str) -> Result<Tokenizer> {
        let dir = std::env::temp_dir().join(format!("smolgen-tokenizer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{label}.json"));
        std::fs::write(&path, json).expect("write");
        Tokenizer::from_hf_files(&path, None, None)
    }

    const BPE: &str = r#""model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}"#;

    #[test]
    fn a_broken_tokenizer_json_is_malformed_naming_the_file_not_a_panic() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for (label, json) in [
            // Cut short inside the decoder: `tokenizers` panicked there.
            (
                "cut",
                format!(r#"{{{BPE}, "decoder": {{"type": "ByteLevel", "#),
            ),
            ("deep", format!(r#"{{{BPE}, "decoder": {deep}}}"#)),
        ] {
            match from_json(label, &json) {
                Err(Error::MalformedModel { path, reason }) => {
                    assert!(path.ends_with(format!("{label}.json")), "{path:?}");
                    assert!(reason.starts_with("tokenizer.json: "), "{reason}");
                }
                other => panic!("{label}: expected MalformedModel, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_largest_id_sizes_the_vocabulary() {
        let bpe = BPE.replace(r#""b": 1"#, r#""b": 9"#);
        let tk = from_json("gap", &format!("{{{bpe}}}")).expect("loads");
        assert_eq!(tk.vocab_size(), 10);
        assert_eq!(tk.encode("b", false).expect("encodes"), [9]);
        let bpe = BPE.replace(r#""b": 1"#, r#""b": 4294967295"#);
        match from_json("huge", &format!("{{{bpe}}}")) {
            Err(Error::MalformedModel { reason, .. }) => {
                assert!(
                    reason.contains(r#"token "b" has id 4294967295"#),
                    "{reason}"
                );
            }
            other => panic!("expected MalformedModel, got {other:?}"),
        }
    }

    #[test]
    fn plain_encoding_equals_a_tokenizer_told_to_encode_special_tokens() {
        let added = |id: u32, content: &str, normalized: bool, special: bool| {
            format!(
                r#"{{"id": {id}, "content": "{content}", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": {normalized}, "special": {special}}}"#
            )
        };
        let json = format!(
            r#"{{"model": {{"type": "BPE", "vocab": {{"a": 0, "b": 1, "ab": 2, "<": 3, "s": 4,
                ">": 5, "[": 6, "x": 7, "]": 8, " ": 9}}, "merges": ["a b"]}},
                "normalizer": {{"type": "Lowercase"}},
                "added_tokens": [{}, {}, {}]}}"#,
            added(10, "<s>", false, true),
            added(11, "[x]", true, false),
            added(12, "ba", false, false),
        );
        let tk = from_json("plain", &json).expect("loads");
        let mut reference = tk.with_special.clone();
        reference.set_encode_special_tokens(true);
        for text in ["", "ab<s>ba", "AB [X] a<s>", "<s><s>", "[x]ab", "bab <S> b"] {
            let expected = reference.encode(text, false).expect("encodes");
            assert_eq!(
                tk.encode(text, false).expect("encodes"),
                expected.get_ids(),
                "{text:?}"
            );
            let expected = tk.with_special.encode(text, false).expect("encodes");
            assert_eq!(
                tk.encode(text, true).expect("encodes"),
                expected.get_ids(),
                "{text:?}"
            );
        }
        assert_eq!(tk.encode("<s>[x]", false).expect("encodes"), [3, 4, 5, 11]);
        assert_eq!(tk.encode("<s>[x]", true).expect("encodes"), [10, 11]);
    }

    #[test]
    fn a_plain_bpe_runs_compact_and_any_other_model_as_tokenizers_has_it() {
        let plain = from_json("compact", &format!("{{{BPE}}}")).expect("loads");
        assert!(matches!(plain.with_special.get_model(), Vocabulary::Bpe(_)));
        let with_unk = BPE.replace(r#""merges": []"#, r#""merges": [], "unk_token": "b""#);
        let tk = from_json("unk", &format!("{{{with_unk}}}")).expect("loads");
        assert!(matches!(tk.with_special.get_model(), Vocabulary::Other(_)));
        assert_eq!(tk.encode("axa", false).expect("encodes"), [0, 1, 0]);
        let word_level = r#"{"model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1},
            "unk_token": "[UNK]"}, "pre_tokenizer": {"type": "Whitespace"}}"#;
        let tk = from_json("word-level", word_level).expect("loads");
        assert!(matches!(tk.with_special.get_model(), Vocabulary::Other(_)));
        assert_eq!(tk.encode("a b a", false).expect("encodes"), [0, 1, 0]);
    }

    #[test]
    fn sentencepiece_pieces() {
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
        assert_eq!(sentencepiece_bytes("\u{2581}the"), b" the");
    }
}
