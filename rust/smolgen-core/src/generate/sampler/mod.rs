//! The fused sampler: from the last position's logits to one token id in a few linear sweeps
//! over buffers it owns, without sorting the vocabulary.
//!
//! Steps, always in this order (the NumPy reference `smolgen.sampling` runs the same steps in
//! the same order, one readable function each):
//!
//! 0. **constraint** (structured output, [`crate::generate::constraint`]): the tokens a grammar
//!    does not allow next become -inf, and stay so through every step below.
//! 1. **logit bias** (OpenAI `logit_bias`): `logit[id] += bias`.
//! 2. **repetition penalty** (Keskar et al. 2019, "CTRL"; Hugging Face
//!    `RepetitionPenaltyLogitsProcessor`): for every distinct token seen, a positive logit is
//!    divided by the penalty and a negative one multiplied by it.
//! 3. **frequency and presence penalties** (OpenAI): for every token generated so far,
//!    `logit -= count * frequency_penalty + presence_penalty`.
//! 4. **temperature 0 is greedy**: the argmax of those logits (ties: the lowest id); nothing
//!    below runs.
//! 5. **temperature**: `logit / temperature`.
//! 6. **top-k**: keep the k highest logits (ties: the lower id first).
//! 7. **softmax** over what is left.
//! 8. **top-p**, nucleus sampling (Holtzman et al. 2019, "The Curious Case of Neural Text
//!    Degeneration"): keep the smallest set of most probable tokens whose cumulative probability
//!    reaches p; the most probable token always stays.
//! 9. **min-p** (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling for Creative and
//!    Coherent LLM Outputs"): drop the tokens whose probability is below `min_p` times the
//!    largest probability.
//! 10. **renormalise** the survivors and draw one with the request's own seeded generator.
//!
//! Tokens seen: the repetition penalty covers the prompt and the generated tokens (the Hugging
//! Face convention: CTRL penalises everything in the context); the frequency and presence
//! penalties cover the generated tokens only (the OpenAI convention: they count what the model
//! said, not what it was told). [`Sampler::sample`] does not record its token: the caller calls
//! [`Sampler::accept`] for each token it keeps.
//!
//! Numerics: steps 1-3 run in f32 on the logits as the model emits them; from the temperature on
//! the arithmetic is f64, so the top-p and min-p cuts do not move with f32 rounding.
//!
//! Determinism: the generator (xoshiro256**, seeded through splitmix64), the exponential, the
//! order of every sum and the order the draw walks the survivors in (token id) are all fixed
//! here, so a seed and a set of parameters give the same tokens on every run and every
//! platform, whatever the versions of our dependencies or of the standard library.
//!
//! Cost: the vocabulary is never sorted. Top-k keeps a bounded buffer of candidates above a
//! rising threshold, compacted by partial selection. Top-p adds up the probability in narrow
//! buckets (the top bits of each float), finds the bucket where the cumulative probability
//! crosses p, keeps every token above it and sorts only that bucket's tokens; min-p is a
//! threshold. A draw over the whole vocabulary skips blocks of 64 tokens by
//! their partial sums. The buffers are allocated once, when the sampler is built.

use crate::error::{Error, Result};
use crate::fastmath::exp_nonpositive;
use crate::generate::rng::{entropy_seed, Xoshiro256StarStar};

/// What the sampler does with the logits. The defaults change nothing: temperature 1, no cut,
/// no penalty.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits; 0 means greedy (argmax). Finite and >= 0.
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 is off, and so is any k >= the vocabulary size.
    pub top_k: usize,
    /// Nucleus sampling threshold in (0, 1]; 1 is off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; in [0, 1], 0 is off.
    pub min_p: f32,
    /// Multiplicative penalty on every token seen (prompt and generated); > 0, 1 is off.
    pub repetition_penalty: f32,
    /// Subtracted once per occurrence of a generated token; in [-2, 2].
    pub frequency_penalty: f32,
    /// Subtracted once from every token generated at least once; in [-2, 2].
    pub presence_penalty: f32,
    /// `(token id, bias)` pairs added to the logits; any finite bias. Entries for the same id
    /// add up.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the request's generator; `None` seeds from the clock and the process's entropy.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every parameter against its domain. `top_k` larger than the vocabulary is not an
    /// error: it keeps every token, like 0.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        if vocab_size == 0 {
            return Err(Error::invalid("the vocabulary is empty: nothing to sample"));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::invalid(format!(
                "min_p must be in [0, 1], got {}",
                self.min_p
            )));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::invalid(format!(
                "repetition_penalty must be a finite number > 0, got {}",
                self.repetition_penalty
            )));
        }
        for (name, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&value) {
                return Err(Error::invalid(format!(
                    "{name} must be in [-2, 2], got {value}"
                )));
            }
        }
        for &(id, bias) in &self.logit_bias {
            check_token(id, vocab_size, "logit_bias")?;
            if !bias.is_finite() {
                return Err(Error::invalid(format!(
                    "logit_bias for token {id} must be finite, got {bias}"
                )));
            }
        }
        Ok(())
    }
}

fn check_token(id: u32, vocab_size: usize, what: &str) -> Result<()> {
    if (id as usize) < vocab_size {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what}: token id {id} is outside the vocabulary (size {vocab_size})"
        )))
    }
}

/// One request's sampler: its parameters, the tokens it has seen, its generator and its buffers.
pub struct Sampler {
    params: SamplingParams,
    history: History,
    scratch: Scratch,
    rng: Xoshiro256StarStar,
}

impl Sampler {
    /// Validates `params` and records `prompt_tokens` for the repetition penalty.
    pub fn new(params: SamplingParams, vocab_size: usize, prompt_tokens: &[u32]) -> Result<Self> {
        params.validate(vocab_size)?;
        let mut history = History::new(vocab_size);
        for &id in prompt_tokens {
            check_token(id, vocab_size, "prompt")?;
            history.see(id);
        }
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Ok(Self {
            params,
            history,
            scratch: Scratch::new(vocab_size),
            rng: Xoshiro256StarStar::seed_from_u64(seed),
        })
    }

    /// Draws the next token from `logits` (one per vocabulary entry). Does not record it: call
    /// [`Sampler::accept`] with the token that is kept.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        self.sample_allowed(logits, None)
    }

    /// [`Sampler::sample`] among the tokens of `allowed` only (a bit set: bit `id % 32` of word
    /// `id / 32`; words past its end allow nothing), as a grammar constrains it.
    pub fn sample_allowed(&mut self, logits: &[f32], allowed: Option<&[u32]>) -> Result<u32> {
        let survivors = process(
            &self.params,
            &self.history,
            logits,
            allowed,
            &mut self.scratch,
        )?;
        let token = match survivors {
            Survivors::Greedy(id) => Some(id),
            Survivors::Everyone { total } => {
                let target = self.rng.next_f64() * total;
                draw_blocked(target, &self.scratch.weights, &self.scratch.block_sums)
            }
            Survivors::Listed { total } => {
                let target = self.rng.next_f64() * total;
                draw(
                    target,
                    self.scratch.candidates.iter().map(|c| (c.id, c.prob)),
                )
            }
        };
        token.ok_or_else(|| Error::invalid("no token has a non-zero probability"))
    }

    /// Records a generated token for the penalties. Ids outside the vocabulary, which
    /// [`Sampler::sample`] never returns, are ignored.
    pub fn accept(&mut self, token: u32) {
        self.history.generate(token);
    }

    /// The distribution [`Sampler::sample`] would draw from: the surviving tokens with their
    /// renormalised probabilities, sorted by probability (descending), then id. Greedy gives
    /// the argmax with probability 1. Survivors whose probability rounds to 0 in f32 (below
    /// about 1e-45) are left out. For inspection and tests; it allocates.
    pub fn distribution(&self, logits: &[f32]) -> Result<Vec<(u32, f32)>> {
        let mut scratch = Scratch::new(self.history.vocab_size());
        let survivors = process(&self.params, &self.history, logits, None, &mut scratch)?;
        let mut out: Vec<(u32, f32)> = match survivors {
            Survivors::Greedy(id) => vec![(id, 1.0)],
            Survivors::Everyone { total } => (0u32..)
                .zip(&scratch.weights)
                .map(|(id, &w)| (id, (w / total) as f32))
                .collect(),
            Survivors::Listed { total } => scratch
                .candidates
                .iter()
                .map(|c| (c.id, (c.prob / total) as f32))
                .collect(),
        };
        out.retain(|&(_, p)| p > 0.0);
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }
}

/// The tokens the penalties read, by id, with the distinct ids listed so that applying a
/// penalty costs the number of distinct tokens seen, not the vocabulary size.
struct History {
    /// Seen in the prompt or generated: the repetition penalty's set.
    seen: Vec<bool>,
    seen_ids: Vec<u32>,
    /// Occurrences among the generated tokens: the frequency and presence penalties' counts.
    counts: Vec<u32>,
    generated_ids: Vec<u32>,
}

impl History {
    fn new(vocab_size: usize) -> Self {
        Self {
            seen: vec![false; vocab_size],
            seen_ids: Vec::new(),
            counts: vec![0; vocab_size],
            generated_ids: Vec::new(),
        }
    }

    fn vocab_size(&self) -> usize {
        self.counts.len()
    }

    fn see(&mut self, id: u32) {
        if let Some(seen) = self.seen.get_mut(id as usize) {
            if !*seen {
                *seen = true;
                self.seen_ids.push(id);
            }
        }
    }

    fn generate(&mut self, id: u32) {
        self.see(id);
        if let Some(count) = self.counts.get_mut(id as usize) {
            if *count == 0 {
                self.generated_ids.push(id);
            }
            *count = count.saturating_add(1);
        }
    }
}

/// A token still in the running: its processed logit, then its probability (or, before the
/// softmax is finished, its unnormalised weight).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    prob: f64,
}

/// Buffers reused from one token to the next, each sized once for the whole vocabulary.
struct Scratch {
    /// The logits after steps 1-3.
    logits: Vec<f32>,
    /// `exp(logit / temperature - max)` for every token, when top-k does not cut.
    weights: Vec<f64>,
    /// The sum of `weights` over each run of [`BLOCK`] tokens, so a draw need not add them all.
    block_sums: Vec<f64>,
    /// The tokens still in the running, in id order.
    candidates: Vec<Candidate>,
    /// A copy of the candidates for top-p to reorder while it looks for the nucleus.
    selection: Vec<Candidate>,
}

impl Scratch {
    fn new(vocab_size: usize) -> Self {
        Self {
            logits: vec![0.0; vocab_size],
            weights: vec![0.0; vocab_size],
            block_sums: vec![0.0; vocab_size.div_ceil(BLOCK)],
            candidates: Vec::with_capacity(vocab_size),
            selection: Vec::with_capacity(vocab_size),
        }
    }
}

/// Where the draw happens once the logits are processed.
enum Survivors {
    /// Temperature 0: this token, no draw.
    Greedy(u32),
    /// No cut: every token, with weight `scratch.weights[id]` out of `total`.
    Everyone { total: f64 },
    /// `scratch.candidates`, in id order, with weight `prob` out of `total`.
    Listed { total: f64 },
}

/// Steps 0-9 (see the module header), leaving the survivors in `scratch`.
fn process(
    params: &SamplingParams,
    history: &History,
    logits: &[f32],
    allowed: Option<&[u32]>,
    scratch: &mut Scratch,
) -> Result<Survivors> {
    let vocab_size = history.vocab_size();
    if logits.len() != vocab_size {
        return Err(Error::invalid(format!(
            "expected {vocab_size} logits (one per vocabulary entry), got {}",
            logits.len()
        )));
    }

    let work = &mut scratch.logits;
    work.copy_from_slice(logits);
    if let Some(allowed) = allowed {
        apply_constraint(work, allowed);
    }
    apply_logit_bias(work, &params.logit_bias);
    apply_repetition_penalty(work, &history.seen_ids, params.repetition_penalty);
    apply_frequency_presence_penalties(
        work,
        &history.counts,
        &history.generated_ids,
        params.frequency_penalty,
        params.presence_penalty,
    );

    let (max, any_nan_or_inf) = max_and_check(work);
    if any_nan_or_inf {
        return Err(explain_bad_logits(logits));
    }
    if max == f32::NEG_INFINITY {
        return Err(Error::invalid(if allowed.is_some() {
            "no token the grammar allows next has a finite logit: no token can be sampled"
        } else {
            "every logit is -inf: no token can be sampled"
        }));
    }

    if params.temperature == 0.0 {
        let argmax = first_index_of(work, max).unwrap_or(0);
        return Ok(Survivors::Greedy(argmax as u32));
    }

    let temperature = f64::from(params.temperature);
    let z_max = f64::from(max) / temperature;
    let top_p = f64::from(params.top_p);
    let min_p = f64::from(params.min_p);
    let candidates = &mut scratch.candidates;

    if params.top_k > 0 && params.top_k < vocab_size {
        select_top_k(work, params.top_k, candidates);
        candidates.sort_unstable_by_key(|c| c.id);
        // Softmax over the k survivors: the dropped tokens weigh nothing.
        let mut z = 0.0;
        for c in candidates.iter_mut() {
            c.prob = exp_nonpositive(f64::from(c.logit) / temperature - z_max);
            z += c.prob;
        }
        for c in candidates.iter_mut() {
            c.prob /= z;
        }
    } else {
        let weights = &mut scratch.weights;
        let z = weigh_all(work, temperature, z_max, weights, &mut scratch.block_sums);
        if top_p >= 1.0 && min_p == 0.0 {
            return Ok(Survivors::Everyone { total: z });
        }
        let floor = survivor_floor(weights, z, top_p, min_p);
        collect_probabilities(weights, floor, z, candidates);
    }

    candidates.retain(|c| c.prob > 0.0);
    top_p_cut(candidates, top_p, &mut scratch.selection);
    min_p_cut(candidates, min_p);
    let total = candidates.iter().map(|c| c.prob).sum();
    Ok(Survivors::Listed { total })
}

/// Step 0: -inf for every token whose bit is clear, 32 tokens at a time (a word with every bit
/// set, most of them in an open grammar, costs one comparison).
fn apply_constraint(logits: &mut [f32], allowed: &[u32]) {
    for (i, chunk) in logits.chunks_mut(32).enumerate() {
        let bits = allowed.get(i).copied().unwrap_or(0);
        if bits == u32::MAX && chunk.len() == 32 {
            continue;
        }
        for (j, x) in chunk.iter_mut().enumerate() {
            if bits & (1 << j) == 0 {
                *x = f32::NEG_INFINITY;
            }
        }
    }
}

/// Step 1.
fn apply_logit_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(x) = logits.get_mut(id as usize) {
            *x += b;
        }
    }
}

/// Step 2: divide positive logits, multiply negative ones, once per distinct token seen.
fn apply_repetition_penalty(logits: &mut [f32], seen_ids: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    for &id in seen_ids {
        if let Some(x) = logits.get_mut(id as usize) {
            *x = if *x > 0.0 { *x / penalty } else { *x * penalty };
        }
    }
}

/// Step 3: `logit -= count * frequency_penalty + presence_penalty` over the generated tokens.
/// The amount is computed in f64 and rounded once to f32, as the reference does.
fn apply_frequency_presence_penalties(
    logits: &mut [f32],
    counts: &[u32],
    generated_ids: &[u32],
    frequency_penalty: f32,
    presence_penalty: f32,
) {
    if frequency_penalty == 0.0 && presence_penalty == 0.0 {
        return;
    }
    for &id in generated_ids {
        let (Some(x), Some(&count)) = (logits.get_mut(id as usize), counts.get(id as usize)) else {
            continue;
        };
        let amount = f64::from(count) * f64::from(frequency_penalty) + f64::from(presence_penalty);
        *x -= amount as f32;
    }
}

/// Width of the independent accumulators in the full-vocabulary reductions: wide enough for
/// the compiler to vectorise them, and fixed, so every platform adds in the same order.
const LANES: usize = 8;

/// The largest value, and whether any value is NaN or +inf (neither can be sampled from).
fn max_and_check(xs: &[f32]) -> (f32, bool) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut bad = [false; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let x = chunk[lane];
            max[lane] = if x > max[lane] { x } else { max[lane] };
            bad[lane] |= cannot_sample(x);
        }
    }
    let mut result = f32::NEG_INFINITY;
    let mut any_bad = false;
    for (&x, &b) in max.iter().zip(&bad) {
        result = if x > result { x } else { result };
        any_bad |= b;
    }
    for &x in tail {
        result = if x > result { x } else { result };
        any_bad |= cannot_sample(x);
    }
    (result, any_bad)
}

/// The lowest index holding `value`, checking [`LANES`] values at a time.
fn first_index_of(xs: &[f32], value: f32) -> Option<usize> {
    let hit = |chunk: &[f32]| chunk.iter().position(|&x| x == value);
    let mut chunks = xs.chunks_exact(LANES);
    for (i, chunk) in (&mut chunks).enumerate() {
        if any(chunk, |x| x == value) {
            return hit(chunk).map(|j| i * LANES + j);
        }
    }
    let tail = chunks.remainder();
    hit(tail).map(|j| xs.len() - tail.len() + j)
}

/// Whether any element of a short chunk passes `test`, without stopping early, so that the
/// compiler can test the whole chunk at once.
#[inline(always)]
fn any<T: Copy>(chunk: &[T], test: impl Fn(T) -> bool) -> bool {
    chunk.iter().fold(false, |found, &x| found | test(x))
}

/// NaN and +inf have no probability: softmax turns them into NaN.
#[inline(always)]
fn cannot_sample(x: f32) -> bool {
    x.is_nan() || x == f32::INFINITY
}

/// Names the first bad input logit, or blames the penalties when the input was fine.
fn explain_bad_logits(logits: &[f32]) -> Error {
    match logits.iter().position(|&x| cannot_sample(x)) {
        Some(i) => Error::invalid(format!(
            "logits must not contain NaN or +inf: logits[{i}] is {}",
            logits[i]
        )),
        None => Error::invalid(
            "a logit overflowed to +inf after the logit bias and penalties were applied",
        ),
    }
}

/// Tokens per partial sum in [`weigh_all`]: the draw skips whole blocks at a time.
const BLOCK: usize = 64;

/// Steps 5 and 7 over the whole vocabulary: stores `exp(logit / temperature - z_max)` for every
/// token in `weights`, the sum of each block of [`BLOCK`] of them in `block_sums`, and returns
/// the sum of the blocks in order, the softmax's normaliser.
fn weigh_all(
    logits: &[f32],
    temperature: f64,
    z_max: f64,
    weights: &mut [f64],
    block_sums: &mut [f64],
) -> f64 {
    let weigh = |x: f32| exp_nonpositive(f64::from(x) / temperature - z_max);
    let mut total = 0.0;
    let blocks = logits.chunks(BLOCK).zip(weights.chunks_mut(BLOCK));
    for ((block, out), block_sum) in blocks.zip(block_sums.iter_mut()) {
        let mut lanes = [0.0f64; LANES];
        let mut chunks_in = block.chunks_exact(LANES);
        let mut chunks_out = out.chunks_exact_mut(LANES);
        for (chunk, out) in (&mut chunks_in).zip(&mut chunks_out) {
            for lane in 0..LANES {
                let w = weigh(chunk[lane]);
                out[lane] = w;
                lanes[lane] += w;
            }
        }
        let mut sum: f64 = lanes.iter().sum();
        for (&x, out) in chunks_in
            .remainder()
            .iter()
            .zip(chunks_out.into_remainder())
        {
            *out = weigh(x);
            sum += *out;
        }
        *block_sum = sum;
        total += sum;
    }
    total
}

mod truncate;

use truncate::{
    collect_probabilities, draw, draw_blocked, min_p_cut, select_top_k, survivor_floor, top_p_cut,
};

#[cfg(test)]
mod tests;
