//! A byte-pair-encoding vocabulary in flat arrays, run by `tokenizers` as its model.
//!
//! `tokenizers`' own BPE keeps each token's text twice (text -> id and id -> text, a `String`
//! and a hash-map entry each) plus the merges: about 9 MB for SmolLM2's 49,152 tokens, a tenth of
//! the 135M model's weights. Here every token's text lies once in one buffer, found by binary
//! search over the ids in text order, and the merges are one table keyed by the pair: about 2 MB.
//! The encoding is `tokenizers`' BPE without dropout, unknown token, byte fallback or sub-word
//! affixes (what byte-level vocabularies such as GPT-2's and SmolLM2's use): each pre-token is
//! split into characters, then the lowest-ranked merge present is applied, leftmost first, until
//! none applies.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::{Model, ModelWrapper, Token};

/// A vocabulary as `tokenizers` runs it: the compact BPE where the file's model allows it,
/// else the library's own model.
#[derive(Clone)]
pub(crate) enum Vocabulary {
    Bpe(CompactBpe),
    Other(Box<ModelWrapper>),
}

impl Vocabulary {
    /// `model` as a [`CompactBpe`] when it is a BPE this module encodes the same way, else as is.
    pub(crate) fn from_model(model: &ModelWrapper) -> Result<Self, String> {
        let ModelWrapper::BPE(bpe) = model else {
            return Ok(Vocabulary::Other(Box::new(model.clone())));
        };
        if !CompactBpe::encodes_like(bpe) {
            return Ok(Vocabulary::Other(Box::new(model.clone())));
        }
        // The merges are private to `tokenizers`; its serialized form lists them by rank.
        let json = serde_json::to_value(bpe).map_err(|e| e.to_string())?;
        let pairs = json
            .get("merges")
            .and_then(|m| m.as_array())
            .ok_or("the BPE model serialized without merges")?;
        let mut merges = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let part = |i: usize| pair.get(i).and_then(|v| v.as_str());
            match (part(0), part(1)) {
                (Some(a), Some(b)) => merges.push((a, b)),
                _ => return Err(format!("a serialized merge is not two tokens: {pair}")),
            }
        }
        let mut tokens = vec![None; bpe.get_vocab_size()];
        for (token, id) in bpe.get_vocab() {
            let id = id as usize;
            if id >= tokens.len() {
                tokens.resize(id + 1, None);
            }
            tokens[id] = Some(token);
        }
        Ok(Vocabulary::Bpe(CompactBpe::new(
            tokens,
            merges,
            bpe.ignore_merges,
        )?))
    }
}

/// Token ids by their text, and the merges by pair. See the module's documentation.
#[derive(Clone)]
pub(crate) struct CompactBpe {
    /// Every token's text, back to back.
    text: String,
    /// Token id -> its `start..end` in `text`; `(u32::MAX, 0)` for an id no token has.
    spans: Vec<(u32, u32)>,
    /// The ids that have a token, in the order of their text.
    by_text: Vec<u32>,
    /// The id of each one-character token below U+0400 (`NO_TOKEN` where none), by code point:
    /// every character of a byte-level word is one of these, looked up once per character.
    small_chars: Vec<u32>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
    /// A pre-token that is itself a token is that token, merges or not (Llama 3's rule).
    ignore_merges: bool,
}

const ABSENT: (u32, u32) = (u32::MAX, 0);
const NO_TOKEN: u32 = u32::MAX;
const SMALL_CHARS: usize = 0x400;

fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

impl CompactBpe {
    /// Whether `bpe` encodes as this module does (no dropout, unknown token, byte fallback or
    /// sub-word affixes).
    pub(crate) fn encodes_like(bpe: &BPE) -> bool {
        bpe.dropout.is_none_or(|d| d == 0.0)
            && bpe.unk_token.is_none()
            && bpe.continuing_subword_prefix.is_none()
            && bpe.end_of_word_suffix.is_none()
            && !bpe.byte_fallback
    }

    /// `tokens[id]` is token `id`'s text (`None` where no token has the id); `merges` in rank
    /// order, each two tokens whose concatenation is a token. A pair listed twice takes its
    /// later rank, as in `tokenizers`.
    pub(crate) fn new<T: AsRef<str>, M: AsRef<str>>(
        tokens: impl IntoIterator<Item = Option<T>>,
        merges: impl IntoIterator<Item = (M, M)>,
        ignore_merges: bool,
    ) -> Result<Self, String> {
        let mut text = String::new();
        let mut spans = Vec::new();
        for token in tokens {
            spans.push(match token {
                Some(t) => {
                    let start = text.len() as u32;
                    text.push_str(t.as_ref());
                    let end =
                        u32::try_from(text.len()).map_err(|_| "the tokens' text passes 4 GiB")?;
                    (start, end)
                }
                None => ABSENT,
            });
        }
        let id_count = u32::try_from(spans.len()).map_err(|_| "too many tokens")?;
        let mut bpe = CompactBpe {
            text,
            spans,
            by_text: Vec::new(),
            small_chars: Vec::new(),
            merges: HashMap::default(),
            ignore_merges,
        };
        let mut by_text: Vec<u32> = (0..id_count)
            .filter(|&id| bpe.spans[id as usize] != ABSENT)
            .collect();
        by_text.sort_unstable_by(|&a, &b| bpe.text_of(a).cmp(bpe.text_of(b)));
        if let Some(twice) = by_text
            .windows(2)
            .find(|w| bpe.text_of(w[0]) == bpe.text_of(w[1]))
        {
            return Err(format!("token {:?} has two ids", bpe.text_of(twice[0])));
        }
        bpe.by_text = by_text;
        bpe.small_chars = (0..SMALL_CHARS as u32)
            .map(|c| {
                char::from_u32(c)
                    .and_then(|c| bpe.token_to_id(c.encode_utf8(&mut [0; 4])))
                    .unwrap_or(NO_TOKEN)
            })
            .collect();

        // Looked up three times per merge: a hash map for the build, dropped after it.
        let index: HashMap<&str, u32> = bpe
            .by_text
            .iter()
            .map(|&id| (bpe.text_of(id), id))
            .collect();
        let mut table = HashMap::default();
        let mut joined = String::new();
        for (rank, (a, b)) in merges.into_iter().enumerate() {
            let (a, b) = (a.as_ref(), b.as_ref());
            let id = |t: &str| {
                index
                    .get(t)
                    .copied()
                    .ok_or_else(|| format!("merge `{a} {b}`: {t:?} is not a token"))
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let (left, right, merged) = (id(a)?, id(b)?, id(&joined)?);
            table.insert(pair_key(left, right), (rank as u32, merged));
        }
        drop(index);
        bpe.merges = table;
        Ok(bpe)
    }

    fn text_of(&self, id: u32) -> &str {
        match self.spans.get(id as usize) {
            Some(&(start, end)) if (start, end) != ABSENT => {
                &self.text[start as usize..end as usize]
            }
            _ => "",
        }
    }

    /// Appends the ids of the pre-token `word` to `ids`.
    pub(crate) fn encode_word(&self, word: &str, merging: &mut Merging, ids: &mut Vec<u32>) {
        self.merge(word, merging);
        ids.extend(merging.merged().map(|s| s.id));
    }

    /// `word`'s characters merged by rank, into `merging`; with `ignore_merges`, a word that is
    /// a token is that token. Characters that are no token are dropped (`tokenizers`' BPE
    /// without an unknown token does the same).
    fn merge(&self, word: &str, merging: &mut Merging) {
        // Symbols as a doubly linked list over the characters.
        let Merging { symbols, queue } = merging;
        symbols.clear();
        queue.clear();
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(id) = self.token_to_id(word) {
                symbols.push(Symbol {
                    id,
                    start: 0,
                    end: word.len(),
                    prev: None,
                    next: None,
                });
                return;
            }
        }
        for (start, c) in word.char_indices() {
            let end = start + c.len_utf8();
            let id = match self.small_chars.get(c as usize) {
                Some(&id) => (id != NO_TOKEN).then_some(id),
                None => self.token_to_id(&word[start..end]),
            };
            if let Some(id) = id {
                let at = symbols.len();
                symbols.push(Symbol {
                    id,
                    start,
                    end,
                    prev: at.checked_sub(1),
                    next: Some(at + 1),
                });
            }
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        // Candidate merges, lowest rank first and then leftmost; an entry whose pair has
        // changed since it was queued is skipped when it comes up.
        let candidate = |symbols: &[Symbol], at: usize| {
            let next = symbols[at].next?;
            let &(rank, merged) = self
                .merges
                .get(&pair_key(symbols[at].id, symbols[next].id))?;
            Some(Reverse((rank, at, merged)))
        };
        queue.extend((0..symbols.len()).filter_map(|at| candidate(symbols, at)));
        while let Some(Reverse((_, at, merged))) = queue.pop() {
            if symbols[at].end == symbols[at].start {
                continue; // merged into its left neighbour
            }
            match candidate(symbols, at) {
                Some(Reverse((_, _, now))) if now == merged => {}
                _ => continue,
            }
            let Some(next) = symbols[at].next else {
                continue;
            };
            let right = symbols[next];
            symbols[at].id = merged;
            symbols[at].end = right.end;
            symbols[at].next = right.next;
            symbols[next].end = symbols[next].start; // removed
            if let Some(after) = right.next {
                symbols[after].prev = Some(at);
            }
            if let Some(before) = symbols[at].prev {
                queue.extend(candidate(symbols, before));
            }
            queue.extend(candidate(symbols, at));
        }
    }
}

/// A word's symbols and its queue of candidate merges, kept from one word to the next.
#[derive(Default)]
pub(crate) struct Merging {
    symbols: Vec<Symbol>,
    /// (rank, position, merged id), smallest first.
    queue: BinaryHeap<Reverse<(u32, usize, u32)>>,
}

impl Merging {
    /// The symbols left after merging, in order.
    fn merged(&self) -> impl Iterator<Item = &Symbol> {
        let mut at = (!self.symbols.is_empty()).then_some(0);
        std::iter::from_fn(move || {
            let symbol = &self.symbols[at?];
            at = symbol.next;
            Some(symbol)
        })
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    start: usize,
    end: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// The pairs' keys are two ids: one multiply spreads them well enough for the table.
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = (key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Model for CompactBpe {
    type Trainer = BpeTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        let mut merging = Merging::default();
        self.merge(sequence, &mut merging);
        Ok(merging
            .merged()
            .map(|s| Token::new(s.id, self.text_of(s.id).to_owned(), (s.start, s.end)))
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.by_text
            .binary_search_by(|&id| self.text_of(id).cmp(token))
            .ok()
            .map(|at| self.by_text[at])
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        match self.spans.get(id as usize) {
            Some(&span) if span != ABSENT => Some(self.text_of(id).to_owned()),
            _ => None,
        }
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.by_text
            .iter()
            .map(|&id| (self.text_of(id).to_owned(), id))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.by_text.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("smolgen's BPE vocabulary is not saved through `tokenizers`".into())
    }

    fn get_trainer(&self) -> BpeTrainer {
        BpeTrainer::default()
    }
}

impl Model for Vocabulary {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        match self {
            Vocabulary::Bpe(m) => m.tokenize(sequence),
            Vocabulary::Other(m) => m.tokenize(sequence),
        }
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Vocabulary::Bpe(m) => m.token_to_id(token),
            Vocabulary::Other(m) => m.token_to_id(token),
        }
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Vocabulary::Bpe(m) => m.id_to_token(id),
            Vocabulary::Other(m) => m.id_to_token(id),
        }
    }
    fn get_vocab(&self) -> HashMap<String, u32> {
        match self {
            Vocabulary::Bpe(m) => m.get_vocab(),
            Vocabulary::Other(m) => m.get_vocab(),
        }
    }
    fn get_vocab_size(&self) -> usize {
        match self {
            Vocabulary::Bpe(m) => m.get_vocab_size(),
            Vocabulary::Other(m) => m.get_vocab_size(),
        }
    }
    fn save(&self, folder: &Path, prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        match self {
            Vocabulary::Bpe(m) => m.save(folder, prefix),
            Vocabulary::Other(m) => m.save(folder, prefix),
        }
    }
    fn get_trainer(&self) -> TrainerWrapper {
        match self {
            Vocabulary::Bpe(m) => m.get_trainer().into(),
            Vocabulary::Other(m) => m.get_trainer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: reproducible draws without a dependency.
    struct Draws(u64);

    impl Draws {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// A vocabulary grown by merging random pairs of its tokens, so that merges repeat pairs,
    /// and some tokens are reached by two different merges; its ids in a shuffled order.
    fn random_vocabulary(draws: &mut Draws) -> (Vec<String>, Vec<(String, String)>) {
        let mut tokens: Vec<String> = ["a", "b", "c", " ", "é", "東"].map(String::from).to_vec();
        let mut merges = Vec::new();
        for _ in 0..300 {
            let a = tokens[draws.below(tokens.len())].clone();
            let b = tokens[draws.below(tokens.len())].clone();
            if a.len() + b.len() > 12 {
                continue;
            }
            let joined = format!("{a}{b}");
            if !tokens.contains(&joined) {
                tokens.push(joined);
            }
            merges.push((a, b));
        }
        for i in (1..tokens.len()).rev() {
            tokens.swap(i, draws.below(i + 1));
        }
        (tokens, merges)
    }

    /// `tokenizers`' own BPE over `tokens` (ids in order) and `merges`.
    fn reference_bpe(
        tokens: &[impl ToString],
        merges: Vec<(String, String)>,
        ignore_merges: bool,
    ) -> BPE {
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.to_string(), id as u32))
            .collect();
        BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .expect("builds")
    }

    #[test]
    fn encodes_as_the_tokenizers_bpe_on_random_words() {
        let mut draws = Draws(0x5EED_1234_ABCD_0001);
        for round in 0..20 {
            let (tokens, merges) = random_vocabulary(&mut draws);
            let ignore_merges = round % 2 == 1;
            let reference = reference_bpe(&tokens, merges.clone(), ignore_merges);
            let ours = CompactBpe::new(tokens.iter().map(Some), merges.clone(), ignore_merges)
                .expect("builds");
            let alphabet = ["a", "b", "c", " ", "é", "東", "z"]; // "z" is no token
            for _ in 0..300 {
                let len = draws.below(40);
                let word: String = (0..len).map(|_| alphabet[draws.below(7)]).collect();
                // (Offsets are not compared: where a character is no token, `tokenizers`
                // shifts the later ones back by its length; ours stay where the text is.)
                let ids = |t: Vec<Token>| t.into_iter().map(|t| t.id).collect::<Vec<_>>();
                assert_eq!(
                    ids(ours.tokenize(&word).expect("encodes")),
                    ids(reference.tokenize(&word).expect("encodes")),
                    "{word:?}, round {round}"
                );
            }
            for (id, token) in tokens.iter().enumerate() {
                assert_eq!(ours.token_to_id(token), Some(id as u32));
                assert_eq!(ours.id_to_token(id as u32).as_deref(), Some(token.as_str()));
            }
            assert_eq!(ours.get_vocab(), reference.get_vocab());
            assert_eq!(ours.get_vocab_size(), reference.get_vocab_size());
        }
    }

    #[test]
    fn ignore_merges_takes_a_word_that_is_a_token_whole() {
        // "abc" is a token no merge makes: merged, it is "ab" + "c".
        let tokens = ["a", "b", "c", "ab", "abc"];
        for ignore_merges in [false, true] {
            let reference = reference_bpe(&tokens, vec![("a".into(), "b".into())], ignore_merges);
            let ours =
                CompactBpe::new(tokens.map(Some), [("a", "b")], ignore_merges).expect("builds");
            let expected: Vec<u32> = if ignore_merges { vec![4] } else { vec![3, 2] };
            let ids = |t: Vec<Token>| t.into_iter().map(|t| t.id).collect::<Vec<_>>();
            assert_eq!(ids(reference.tokenize("abc").expect("encodes")), expected);
            assert_eq!(ids(ours.tokenize("abc").expect("encodes")), expected);
            let mut encoded = Vec::new();
            ours.encode_word("abc", &mut Merging::default(), &mut encoded);
            assert_eq!(encoded, expected);
        }
    }

    #[test]
    fn a_merge_of_unknown_tokens_or_a_token_twice_is_refused() {
        let tokens = ["a", "b", "ab"].map(Some);
        assert!(CompactBpe::new(tokens, [("a", "b")], false).is_ok());
        let err = CompactBpe::new(tokens, [("a", "c")], false).err();
        assert_eq!(err.as_deref(), Some("merge `a c`: \"c\" is not a token"));
        let err = CompactBpe::new(tokens, [("b", "a")], false).err();
        assert_eq!(err.as_deref(), Some("merge `b a`: \"ba\" is not a token"));
        let err = CompactBpe::new(["a", "b", "a"].map(Some), [("a", "b")], false).err();
        assert_eq!(err.as_deref(), Some("token \"a\" has two ids"));
    }

    #[test]
    fn ids_without_a_token_are_skipped() {
        let bpe = CompactBpe::new(
            [Some("a"), None, Some("b")],
            std::iter::empty::<(&str, &str)>(),
            false,
        )
        .expect("builds");
        assert_eq!(bpe.get_vocab_size(), 2);
        assert_eq!(bpe.id_to_token(1), None);
        assert_eq!(bpe.token_to_id("b"), Some(2));
        let ids: Vec<u32> = bpe
            .tokenize("ba")
            .expect("encodes")
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, [2, 0]);
    }
}
