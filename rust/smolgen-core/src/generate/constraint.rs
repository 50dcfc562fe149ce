//! Structured output: a grammar the generated text must match (a JSON Schema, a regular
//! expression or a Lark grammar), compiled by llguidance into a parser that says, before each
//! token, which tokens keep the text inside the grammar. The sampler drops the others in its
//! first sweep over the logits (step 0, see [`crate::generate::sampler`]), so a constrained
//! generation always parses: the model can only end it (with its end-of-generation token) where
//! the grammar is complete.
//!
//! The vocabulary's trie is built once per model ([`Grammars`]); each request compiles its
//! grammar into a [`Constraint`] of its own. Every cost is bounded by llguidance's parser limits:
//! the size of a grammar, the work of compiling it and the work of each token's mask.

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{panic_utils, JsonCompileOptions, Matcher, ParserFactory};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// What the generated text must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grammar {
    /// A JSON Schema, as JSON text; `{}` allows any JSON value, `{"type": "object"}` any object.
    JsonSchema(String),
    /// A regular expression (Rust `regex` syntax) the whole output must match.
    Regex(String),
    /// A context-free grammar in llguidance's Lark dialect; its `start` rule is the output.
    Lark(String),
}

/// The longest schema or grammar text a request may give. Compiling costs more than linear
/// time in the size of some grammars (an object of 5,000 optional properties, 144 KB, takes
/// seconds): this keeps every compile well under a second.
pub const MAX_GRAMMAR_BYTES: usize = 64 << 10;

impl Grammar {
    /// The option that carries it, for error messages.
    pub fn option_name(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "json_schema",
            Grammar::Regex(_) => "regex",
            Grammar::Lark(_) => "grammar",
        }
    }

    fn text(&self) -> &str {
        match self {
            Grammar::JsonSchema(text) | Grammar::Regex(text) | Grammar::Lark(text) => text,
        }
    }
}

/// How generated JSON is laid out unless a schema says otherwise, as the value of a schema's
/// `x-guidance` key (llguidance's): one space after `:` and `,`, as Python's `json.dumps`
/// writes it, and no other whitespace, so a small model cannot wander into an endless run of
/// blank lines. `oneOf` is read as `anyOf` (what Pydantic writes for a tagged union), the
/// approximation every structured-output engine makes. A `%json` schema inside a Lark grammar
/// (the tool-call grammar) carries it the same way.
pub fn json_layout() -> serde_json::Value {
    let options = JsonCompileOptions {
        item_separator: ", ".into(),
        key_separator: ": ".into(),
        whitespace_flexible: false,
        coerce_one_of: true,
        ..JsonCompileOptions::default()
    };
    // Plain strings and flags: writing them as JSON cannot fail.
    serde_json::to_value(options).unwrap_or_default()
}

/// The per-model half of constrained decoding: the vocabulary as llguidance's token trie and
/// the compiler that turns a [`Grammar`] into a [`Constraint`].
pub struct Grammars {
    factory: ParserFactory,
    /// The token that ends a constrained generation.
    end: u32,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").finish_non_exhaustive()
    }
}

impl Grammars {
    /// Builds the vocabulary's trie. A constrained generation ends with the tokenizer's EOS
    /// token (or its first end-of-generation token), which a model without one cannot do.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self> {
        let end = tokenizer
            .eos_id
            .filter(|id| tokenizer.is_end_of_generation(*id))
            .or_else(|| tokenizer.end_of_generation.first().copied())
            .ok_or_else(|| {
                Error::invalid(
                    "this model's vocabulary has no end-of-generation token, so a constrained \
                     generation could never end",
                )
            })?;
        let built = panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let vocabulary: TokEnv = Arc::new(VocabularyTrie::new(Arc::clone(&tokenizer), end)?);
            let mut factory = ParserFactory::new_simple(&vocabulary)?;
            factory.quiet();
            *factory.limits_mut() = ParserLimits {
                // The parser's state and the whole grammar do not belong in an error message.
                verbose_errors: false,
                ..ParserLimits::default()
            };
            Ok(factory)
        }));
        built
            .map(|factory| Self { factory, end })
            .map_err(|e| Error::invalid(format!("cannot constrain this model's output: {e}")))
    }

    /// Compiles `grammar` for one generation. A grammar that does not parse, uses what
    /// llguidance does not support or exceeds its limits is an `InvalidArgument` naming the
    /// option.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let name = grammar.option_name();
        let invalid = |e: &dyn std::fmt::Display| grammar_error(name, e);
        let size = grammar.text().len();
        if size > MAX_GRAMMAR_BYTES {
            return Err(invalid(&format!(
                "{size} bytes is more than the {MAX_GRAMMAR_BYTES} a constraint may have"
            )));
        }
        let top = match grammar {
            Grammar::JsonSchema(text) => {
                let mut schema: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| invalid(&e))?;
                let Some(object) = schema.as_object_mut() else {
                    // `true` is the schema that allows everything; `false` allows nothing.
                    return Err(invalid(&"a JSON Schema must be a JSON object"));
                };
                if !object.contains_key("x-guidance") {
                    object.insert("x-guidance".into(), json_layout());
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Grammar::Regex(pattern) => TopLevelGrammar::from_regex(pattern),
            Grammar::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
        };
        let matcher = Matcher::new(self.factory.create_parser(top));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(&e));
        }
        Ok(Constraint {
            matcher,
            option: name,
            end: self.end,
        })
    }
}

/// One generation's grammar state: which tokens may come next, advanced by each token kept.
pub struct Constraint {
    matcher: Matcher,
    option: &'static str,
    /// The end-of-generation token the grammar allows where it is complete.
    end: u32,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("option", &self.option)
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// The tokens allowed next, as a bit set (bit `id % 32` of word `id / 32`): only the
    /// end-of-generation token once the grammar is complete and cannot go on.
    pub fn allowed(&mut self) -> Result<SimpleVob> {
        self.matcher
            .compute_mask_or_eos()
            .map_err(|e| grammar_error(self.option, &e))
    }

    /// Advances the grammar past `token`, which [`Constraint::allowed`] allowed. The
    /// end-of-generation token ends the generation: there is nothing after it to constrain.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        if token == self.end {
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| grammar_error(self.option, &e))
    }
}

/// An error of the grammar given as `option`. An internal failure that llguidance caught
/// reports its backtrace too, which is for a debugger, not for the request's author.
fn grammar_error(option: &str, e: &dyn std::fmt::Display) -> Error {
    let message = e.to_string();
    let message = message.split("\n<backtrace>").next().unwrap_or_default();
    Error::invalid(format!("{option}: {}", message.trim_end()))
}

/// The vocabulary as llguidance reads it: each token's bytes, special tokens marked with a
/// leading 0xFF so that no grammar can produce them as text.
struct VocabularyTrie {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl VocabularyTrie {
    fn new(tokenizer: Arc<Tokenizer>, end: u32) -> anyhow::Result<Self> {
        let words = (0..tokenizer.vocab_size() as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id)?;
                Ok(if tokenizer.is_special(id) {
                    [&[TokTrie::SPECIAL_TOKEN_MARKER][..], bytes].concat()
                } else {
                    bytes.to_vec()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let info = TokRxInfo {
            vocab_size: words.len() as u32,
            tok_eos: end,
            tok_bos: tokenizer.bos_id,
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        Ok(Self {
            trie: TokTrie::from(&info, &words),
            tokenizer,
        })
    }
}

impl TokenizerEnv for VocabularyTrie {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// The model's own tokenization (special-token text stays text); bytes that are not UTF-8,
    /// which the tokenizer cannot take, fall back to the trie's greedy longest match.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        std::str::from_utf8(s)
            .ok()
            .and_then(|text| self.tokenizer.encode(text, false).ok())
            .unwrap_or_else(|| self.trie.greedy_tokenize(s))
    }
}
