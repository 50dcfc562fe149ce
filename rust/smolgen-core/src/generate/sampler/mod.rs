//! The fused sampler: from the last position's logits to one token id in a few linear sweeps
//! over buffers it owns, without sorting the vocabulary.
//!
//! Steps, always in this order (the NumPy reference `smolgen.sampling` runs the same steps in
//! the same order, one readable function each):
//!
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

use std::cmp::Ordering;

use crate::error::{Error, Result};

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
        let survivors = process(&self.params, &self.history, logits, &mut self.scratch)?;
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
        let survivors = process(&self.params, &self.history, logits, &mut scratch)?;
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

/// Steps 1-9 (see the module header), leaving the survivors in `scratch`.
fn process(
    params: &SamplingParams,
    history: &History,
    logits: &[f32],
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
        return Err(Error::invalid(
            "every logit is -inf: no token can be sampled",
        ));
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

/// Step 6: the k best `(logit, id)` pairs (higher logit first, then lower id), in no particular
/// order. Scans the vocabulary once, keeping at most 2k candidates above a threshold that rises
/// to the k-th best logit each time the buffer fills.
fn select_top_k(logits: &[f32], k: usize, out: &mut Vec<Candidate>) {
    out.clear();
    let buffer = 2 * k;
    let mut threshold = f32::NEG_INFINITY;
    for (chunk_start, chunk) in (0u32..).step_by(LANES).zip(logits.chunks(LANES)) {
        // Strictly above: a later token with the threshold's logit has a higher id, so it
        // loses the tie against every kept one. -inf never enters.
        if !any(chunk, |x| x > threshold) {
            continue;
        }
        for (id, &logit) in (chunk_start..).zip(chunk) {
            if logit > threshold {
                out.push(Candidate {
                    id,
                    logit,
                    prob: 0.0,
                });
                if out.len() == buffer {
                    keep_best(out, k);
                    threshold = out[k - 1].logit;
                }
            }
        }
    }
    if out.len() > k {
        keep_best(out, k);
    }
}

/// Keeps the k best candidates, the k-th best last.
fn keep_best(candidates: &mut Vec<Candidate>, k: usize) {
    candidates.select_nth_unstable_by(k - 1, by_logit);
    candidates.truncate(k);
}

fn by_logit(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit
        .partial_cmp(&a.logit)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

fn by_probability(a: &Candidate, b: &Candidate) -> Ordering {
    b.prob
        .partial_cmp(&a.prob)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// Before steps 8 and 9 without top-k: a weight below which no token survives top-p or
/// min-p, so that one pass can collect the few that might without sorting the vocabulary.
/// The most probable token weighs 1 and the weights sum to `z`.
fn survivor_floor(weights: &[f64], z: f64, top_p: f64, min_p: f64) -> f64 {
    // A margin below min-p's own limit: the exact cut, on probabilities, comes later.
    let mut floor = min_p * (1.0 - 1e-9);
    if top_p < 1.0 {
        let top_key = bucket_key(1.0);
        if let Some((bucket, _)) = crossing_bucket(weights.iter().copied(), top_key, top_p * z) {
            floor = floor.max(bucket_floor(bucket, top_key));
        }
    }
    floor
}

/// The tokens weighing at least `floor` (and more than 0: weights are 0 or normal floats), in
/// id order, with their probabilities `weight / z`.
fn collect_probabilities(weights: &[f64], floor: f64, z: f64, out: &mut Vec<Candidate>) {
    out.clear();
    let floor = floor.max(f64::MIN_POSITIVE);
    for (chunk_start, chunk) in (0u32..).step_by(LANES).zip(weights.chunks(LANES)) {
        if !any(chunk, |w| w >= floor) {
            continue;
        }
        for (id, &w) in (chunk_start..).zip(chunk) {
            if w >= floor {
                out.push(Candidate {
                    id,
                    logit: 0.0,
                    prob: w / z,
                });
            }
        }
    }
}

/// Step 8: keeps the nucleus, the smallest set of most probable candidates (ties: lower id
/// first) whose probability reaches `top_p`, or all of them if rounding leaves the total just
/// short. `candidates` stay in id order.
fn top_p_cut(candidates: &mut Vec<Candidate>, top_p: f64, selection: &mut Vec<Candidate>) {
    if top_p >= 1.0 {
        return;
    }
    if let Some(last) = nucleus_boundary(candidates, top_p, selection) {
        candidates.retain(|c| by_probability(c, &last) != Ordering::Greater);
    }
}

/// Buckets of the nucleus search: 64 powers of two, each split in 8 by mantissa.
const NUCLEUS_BUCKETS: usize = 512;

/// The top bits of a positive float, its exponent and three mantissa bits: they grow with
/// it, and the values that share them are within 12.5% of each other.
fn bucket_key(x: f64) -> u64 {
    x.to_bits() >> 49
}

/// The bucket of `x` > 0, counted down from the one whose key is `top_key`; everything more
/// than 64 powers of two down shares the last.
fn bucket_of(x: f64, top_key: u64) -> usize {
    (top_key.saturating_sub(bucket_key(x)) as usize).min(NUCLEUS_BUCKETS - 1)
}

/// The smallest value in `bucket` or any bucket above it.
fn bucket_floor(bucket: usize, top_key: u64) -> f64 {
    if bucket + 1 >= NUCLEUS_BUCKETS {
        0.0
    } else {
        f64::from_bits(top_key.saturating_sub(bucket as u64) << 49)
    }
}

/// Where the nucleus ends, to within a bucket: adds up `weights` by bucket (in the order
/// given), then walks the buckets from the top. Returns the first bucket at which the running
/// total reaches `needed`, with the total of the buckets above it; `None` if it never does.
fn crossing_bucket(
    weights: impl Iterator<Item = f64>,
    top_key: u64,
    needed: f64,
) -> Option<(usize, f64)> {
    let mut mass = [0.0f64; NUCLEUS_BUCKETS];
    for w in weights {
        mass[bucket_of(w, top_key)] += w;
    }
    let mut before = 0.0;
    for (bucket, &m) in mass.iter().enumerate() {
        if before + m >= needed {
            return Some((bucket, before));
        }
        before += m;
    }
    None
}

/// The least probable token of the nucleus, sorting only the candidates in the bucket where
/// the cumulative probability reaches `top_p`. `None` when rounding keeps the total just short
/// of `top_p`: everything stays.
fn nucleus_boundary(
    candidates: &[Candidate],
    top_p: f64,
    selection: &mut Vec<Candidate>,
) -> Option<Candidate> {
    let top_key = bucket_key(candidates.iter().fold(0.0, |m: f64, c| m.max(c.prob)));
    let probs = candidates.iter().map(|c| c.prob);
    let (bucket, mut before) = crossing_bucket(probs, top_key, top_p)?;
    selection.clear();
    selection.extend(
        candidates
            .iter()
            .filter(|c| bucket_of(c.prob, top_key) == bucket),
    );
    selection.sort_unstable_by(by_probability);
    for c in selection.iter() {
        before += c.prob;
        if before >= top_p {
            return Some(*c);
        }
    }
    // Only rounding gets here: the bucket was chosen because its total reached top_p.
    selection.last().copied()
}

/// Step 9: drop the candidates below `min_p` times the largest probability.
fn min_p_cut(candidates: &mut Vec<Candidate>, min_p: f64) {
    if min_p == 0.0 {
        return;
    }
    let max = candidates.iter().fold(0.0, |m: f64, c| m.max(c.prob));
    let limit = min_p * max;
    candidates.retain(|c| c.prob >= limit);
}

/// Step 10: inverse-CDF draw over `(id, weight)` pairs in id order: the first token at which
/// the running sum of the weights exceeds `target` (`u * total`, u uniform in [0, 1)). When
/// rounding leaves the sum just short, the last token with a non-zero weight.
///
/// The order is the token ids', which no sorting algorithm can change, so the tokens a seed
/// draws never depend on the standard library's version.
fn draw(target: f64, weights: impl Iterator<Item = (u32, f64)>) -> Option<u32> {
    let mut cumulative = 0.0;
    let mut last = None;
    for (id, w) in weights {
        if w > 0.0 {
            cumulative += w;
            last = Some(id);
            if target < cumulative {
                break;
            }
        }
    }
    last
}

/// [`draw`] over the whole vocabulary, a block at a time: finds the block whose partial sum
/// crosses `target`, then the token inside it.
fn draw_blocked(target: f64, weights: &[f64], block_sums: &[f64]) -> Option<u32> {
    let mut cumulative = 0.0;
    let mut last_nonzero = None;
    for (b, &block_sum) in block_sums.iter().enumerate() {
        if block_sum > 0.0 {
            last_nonzero = Some(b);
        }
        if target < cumulative + block_sum {
            return draw_in_block(target - cumulative, weights, b);
        }
        cumulative += block_sum;
    }
    last_nonzero.and_then(|b| draw_in_block(f64::INFINITY, weights, b))
}

fn draw_in_block(target: f64, weights: &[f64], block: usize) -> Option<u32> {
    let start = block * BLOCK;
    let end = weights.len().min(start + BLOCK);
    let ids = (start as u32)..;
    draw(target, ids.zip(weights[start..end].iter().copied()))
}

/// e^x for x <= 0 (and -inf), accurate to a couple of ulps; 0 below -708, where e^x leaves
/// the normal f64 range. Written here rather than taken from the platform's libm so that the
/// probabilities, and hence the draws, are bit-identical everywhere; branch-free, so the
/// full-vocabulary loop vectorises.
///
/// Cody and Waite's reduction: x = n ln 2 + r with |r| <= ln(2) / 2, so e^x = 2^n e^r, with
/// e^r from its Taylor series to degree 13 (truncation error below 1e-17).
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const LOWEST: f64 = -708.0;
    // ln 2 split in two (fdlibm's constants) so that n * LN2_HI is exact.
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Adding 1.5 * 2^52 rounds to the nearest integer and leaves it in the low mantissa bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    const INV_FACTORIAL: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];

    let clamped = if x < LOWEST { LOWEST } else { x };
    let shifted = clamped * std::f64::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let mut poly = INV_FACTORIAL[13];
    for &c in INV_FACTORIAL[..13].iter().rev() {
        poly = poly * r + c;
    }
    // The low 12 bits of `shifted` hold n mod 4096; n + 1023 is 2^n's biased exponent.
    let two_to_n = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    let y = poly * two_to_n;
    if x < LOWEST {
        0.0
    } else {
        y
    }
}

/// xoshiro256** 1.0 (Blackman and Vigna, "Scrambled linear pseudorandom number generators",
/// 2018), its state filled from the 64-bit seed by splitmix64, as its authors recommend.
struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    fn seed_from_u64(seed: u64) -> Self {
        let mut state = seed;
        let mut splitmix64 = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [splitmix64(), splitmix64(), splitmix64(), splitmix64()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed for requests that gave none: the clock, hashed with the process's random keys (the
/// standard library draws those from the OS), so two requests in the same instant differ too.
fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams {
            seed: Some(7),
            ..SamplingParams::default()
        }
    }

    fn sampler(params: SamplingParams, vocab_size: usize, prompt: &[u32]) -> Sampler {
        Sampler::new(params, vocab_size, prompt).expect("valid parameters")
    }

    fn ids(distribution: &[(u32, f32)]) -> Vec<u32> {
        distribution.iter().map(|&(id, _)| id).collect()
    }

    /// Same surviving ids, probabilities within `tolerance`, and `actual` sorted by probability
    /// then id. Survivors below 1e-38 need not be listed: f32 rounds the smallest to 0.
    fn assert_close(actual: &[(u32, f32)], expected: &[(u32, f64)], tolerance: f64) {
        assert!(
            actual
                .windows(2)
                .all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0)),
            "not sorted by probability, then id"
        );
        let mut actual = actual.to_vec();
        let mut expected = expected.to_vec();
        actual.sort_by_key(|p| p.0);
        expected.sort_by_key(|p| p.0);
        let mut a = actual.iter().peekable();
        for &(id, q) in &expected {
            match a.peek() {
                Some(&&(got, p)) if got == id => {
                    assert!(
                        (f64::from(p) - q).abs() <= tolerance,
                        "token {id}: {p} vs {q}"
                    );
                    a.next();
                }
                _ => assert!(q < 1e-38, "token {id} (p = {q}) is missing"),
            }
        }
        assert!(a.next().is_none(), "a token survives that should not");
    }

    /// Logits whose softmax is `probs`.
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    /// Normal(0, sigma) logits from Box-Muller on the module's own generator.
    fn normal_logits(n: usize, sigma: f64, seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let u1 = 1.0 - rng.next_f64();
                let u2 = rng.next_f64();
                let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (sigma * g) as f32
            })
            .collect()
    }

    /// Every step transcribed over the full vocabulary, sorting everything: the slow, obvious
    /// version the fast paths must agree with.
    fn brute_force(
        params: &SamplingParams,
        logits: &[f32],
        prompt: &[u32],
        generated: &[u32],
    ) -> Vec<(u32, f64)> {
        let mut x = logits.to_vec();
        for &(id, b) in &params.logit_bias {
            x[id as usize] += b;
        }
        let mut seen: Vec<u32> = prompt.iter().chain(generated).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            let v = x[id as usize];
            let r = params.repetition_penalty;
            x[id as usize] = if v > 0.0 { v / r } else { v * r };
        }
        let mut counts = vec![0u32; logits.len()];
        for &id in generated {
            counts[id as usize] += 1;
        }
        for (v, &c) in x.iter_mut().zip(&counts) {
            if c > 0 {
                let amount = f64::from(c) * f64::from(params.frequency_penalty)
                    + f64::from(params.presence_penalty);
                *v -= amount as f32;
            }
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| {
            x[b as usize]
                .partial_cmp(&x[a as usize])
                .unwrap_or(Ordering::Equal)
                .then(a.cmp(&b))
        });
        if params.temperature == 0.0 {
            return vec![(order[0], 1.0)];
        }
        if params.top_k > 0 {
            order.truncate(params.top_k);
        }
        let t = f64::from(params.temperature);
        let z_max = f64::from(x[order[0] as usize]) / t;
        let weights: Vec<f64> = order
            .iter()
            .map(|&id| (f64::from(x[id as usize]) / t - z_max).exp())
            .collect();
        let z: f64 = weights.iter().sum();
        let mut probs: Vec<(u32, f64)> = order
            .iter()
            .zip(&weights)
            .map(|(&id, &w)| (id, w / z))
            .collect();
        probs.sort_by(|a, b| {
            b.1.partial_cmp(&a.1)
                .unwrap_or(Ordering::Equal)
                .then(a.0.cmp(&b.0))
        });
        probs.retain(|&(_, p)| p > 0.0);
        if params.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|&(_, p)| {
                    cumulative += p;
                    cumulative >= f64::from(params.top_p)
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let limit = f64::from(params.min_p) * probs[0].1;
        probs.retain(|&(_, p)| p >= limit);
        let total: f64 = probs.iter().map(|&(_, p)| p).sum();
        probs.iter().map(|&(id, p)| (id, p / total)).collect()
    }

    #[test]
    fn greedy_is_the_argmax_with_ties_to_the_lowest_id() {
        let logits = [0.1, 2.0, -1.0, 2.0];
        let mut s = sampler(SamplingParams::greedy(), 4, &[]);
        assert_eq!(s.sample(&logits).unwrap(), 1);
        assert_eq!(s.distribution(&logits).unwrap(), vec![(1, 1.0)]);
    }

    #[test]
    fn greedy_takes_the_first_of_equal_maxima_anywhere() {
        for (len, first, second) in [
            (1003, 0, 7),
            (1003, 500, 501),
            (1003, 1001, 1002),
            (5, 2, 4),
        ] {
            let mut logits = vec![0.0f32; len];
            logits[first] = 1.0;
            logits[second] = 1.0;
            let mut s = sampler(SamplingParams::greedy(), len, &[]);
            assert_eq!(s.sample(&logits).unwrap() as usize, first);
        }
    }

    #[test]
    fn greedy_sees_bias_and_penalties() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let biased = SamplingParams {
            logit_bias: vec![(2, 5.0)],
            ..SamplingParams::greedy()
        };
        assert_eq!(sampler(biased, 4, &[]).sample(&logits).unwrap(), 2);
        let penalised = SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::greedy()
        };
        assert_eq!(sampler(penalised, 4, &[1]).sample(&logits).unwrap(), 3);
    }

    #[test]
    fn logit_bias_adds_and_repeated_entries_add_up() {
        let mut x = vec![1.0, 2.0, 3.0];
        apply_logit_bias(&mut x, &[(0, 0.5), (2, -3.0), (0, 0.25)]);
        assert_eq!(x, vec![1.75, 2.0, 0.0]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut x = vec![2.0, -2.0, 1.0, 0.0, 4.0];
        apply_repetition_penalty(&mut x, &[0, 1, 3], 2.0);
        assert_eq!(x, vec![1.0, -4.0, 1.0, 0.0, 4.0]);
        let mut y = vec![2.0, -2.0];
        apply_repetition_penalty(&mut y, &[0, 1], 0.5);
        assert_eq!(y, vec![4.0, -1.0]);
    }

    #[test]
    fn frequency_and_presence_penalties_subtract_count_times_frequency_plus_presence() {
        let mut x = vec![1.0, 1.0, 1.0];
        let counts = [3, 0, 1];
        apply_frequency_presence_penalties(&mut x, &counts, &[0, 2], 0.5, 0.25);
        assert_eq!(x, vec![1.0 - 1.75, 1.0, 1.0 - 0.75]);
    }

    #[test]
    fn prompt_tokens_get_the_repetition_penalty_only() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..SamplingParams::greedy()
        };
        let mut s = sampler(p.clone(), 4, &[0]);
        s.accept(1);
        s.accept(1);
        s.accept(99); // outside the vocabulary: ignored
        let logits = [4.0, 4.0, -1.0, 0.5];
        // token 0: 4 / 2 = 2; token 1: 4 / 2 - (2 * 0.5 + 0.25) = 0.75.
        let expected = brute_force(&p, &logits, &[0], &[1, 1]);
        assert_eq!(expected, vec![(0, 1.0)]);
        assert_eq!(s.sample(&logits).unwrap(), 0);
        let mut x = logits.to_vec();
        apply_repetition_penalty(&mut x, &s.history.seen_ids, 2.0);
        apply_frequency_presence_penalties(
            &mut x,
            &s.history.counts,
            &s.history.generated_ids,
            0.5,
            0.25,
        );
        assert_eq!(x, vec![2.0, 0.75, -1.0, 0.5]);
    }

    #[test]
    fn temperature_one_without_cuts_is_the_softmax() {
        let probs = [0.5, 0.3, 0.15, 0.05];
        let d = sampler(params(), 4, &[])
            .distribution(&logits_of(&probs))
            .unwrap();
        let expected: Vec<(u32, f64)> = (0..).zip(probs).collect();
        assert_close(&d, &expected, 1e-6);
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [1.0, 0.0];
        for t in [0.5f32, 2.0] {
            let p = SamplingParams {
                temperature: t,
                ..params()
            };
            let d = sampler(p, 2, &[]).distribution(&logits).unwrap();
            let a = (1.0 / f64::from(t)).exp();
            assert_close(&d, &[(0, a / (a + 1.0)), (1, 1.0 / (a + 1.0))], 1e-6);
        }
    }

    #[test]
    fn top_k_keeps_the_k_highest_with_ties_to_the_lower_id() {
        let p = SamplingParams {
            top_k: 2,
            ..params()
        };
        let d = sampler(p.clone(), 4, &[])
            .distribution(&[1.0, 2.0, 3.0, 0.0])
            .unwrap();
        let e = 1f64.exp();
        assert_close(&d, &[(2, e / (e + 1.0)), (1, 1.0 / (e + 1.0))], 1e-6);
        let d = sampler(p, 4, &[])
            .distribution(&[0.0, 1.0, 1.0, 1.0])
            .unwrap();
        assert_eq!(ids(&d), vec![1, 2]);
    }

    #[test]
    fn top_k_of_the_vocabulary_size_or_more_is_off() {
        let logits = [0.3, 0.1, -2.0];
        let all = sampler(params(), 3, &[]).distribution(&logits).unwrap();
        for k in [3, 4, 1000] {
            let p = SamplingParams {
                top_k: k,
                ..params()
            };
            assert_eq!(sampler(p, 3, &[]).distribution(&logits).unwrap(), all);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() {
        let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
        for (top_p, expected) in [
            (0.4, vec![(0, 1.0)]),
            (0.75, vec![(0, 0.625), (1, 0.375)]),
            (
                0.85,
                vec![(0, 0.5 / 0.95), (1, 0.3 / 0.95), (2, 0.15 / 0.95)],
            ),
        ] {
            let p = SamplingParams { top_p, ..params() };
            let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
            assert_close(&d, &expected, 1e-6);
        }
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
        let p = SamplingParams {
            min_p: 0.35,
            ..params()
        };
        let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
        assert_close(&d, &[(0, 0.625), (1, 0.375)], 1e-6);
    }

    #[test]
    fn top_p_and_min_p_combine() {
        // top_p 0.9 keeps {0, 1, 2} (0.5 + 0.3 < 0.9); min_p 0.4 then drops 2 (0.15 < 0.4 * 0.5).
        let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
        let p = SamplingParams {
            top_p: 0.9,
            min_p: 0.4,
            ..params()
        };
        let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
        assert_close(&d, &[(0, 0.625), (1, 0.375)], 1e-6);
    }

    #[test]
    fn minus_infinity_logits_never_survive() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 1.0];
        for top_k in [0, 3] {
            let p = SamplingParams {
                top_k,
                min_p: 0.01,
                ..params()
            };
            let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
            assert_eq!(ids(&d), vec![3, 1]);
        }
    }

    #[test]
    fn select_top_k_matches_a_full_sort() {
        // Rounded logits make many ties; the vocabulary is large enough to compact many times.
        for (seed, k) in [(1, 1), (2, 5), (3, 40), (4, 333), (5, 2999), (6, 2500)] {
            let logits: Vec<f32> = normal_logits(3003, 2.0, seed)
                .iter()
                .map(|x| (x * 4.0).round() / 4.0)
                .collect();
            let mut expected: Vec<u32> = (0..3003).collect();
            expected.sort_by(|&a, &b| {
                logits[b as usize]
                    .partial_cmp(&logits[a as usize])
                    .unwrap_or(Ordering::Equal)
                    .then(a.cmp(&b))
            });
            expected.truncate(k);
            let mut out = Vec::new();
            select_top_k(&logits, k, &mut out);
            out.sort_by(by_logit);
            let got: Vec<u32> = out.iter().map(|c| c.id).collect();
            assert_eq!(got, expected, "k = {k}");
        }
    }

    fn coin(rng: &mut Xoshiro256StarStar) -> bool {
        rng.next_f64() < 0.5
    }

    #[test]
    fn fast_paths_match_the_brute_force_on_random_settings() {
        let mut rng = Xoshiro256StarStar::seed_from_u64(2024);
        for case in 0..200u64 {
            let vocab_size = if case % 10 == 0 {
                49_152
            } else {
                1 + (case as usize * 37) % 300
            };
            let sigma = [0.5, 3.0, 10.0][case as usize % 3];
            let logits = normal_logits(vocab_size, sigma, case);

            let p = SamplingParams {
                temperature: if coin(&mut rng) {
                    1.0
                } else {
                    0.05 + 2.0 * rng.next_f64()
                } as f32,
                top_k: if rng.next_f64() < 0.5 {
                    0
                } else {
                    1 + (rng.next_u64() % 100) as usize
                },
                top_p: if coin(&mut rng) {
                    1.0
                } else {
                    0.05 + 0.95 * rng.next_f64()
                } as f32,
                min_p: if coin(&mut rng) {
                    0.0
                } else {
                    0.3 * rng.next_f64()
                } as f32,
                repetition_penalty: if coin(&mut rng) {
                    1.0
                } else {
                    0.5 + rng.next_f64()
                } as f32,
                frequency_penalty: if coin(&mut rng) {
                    0.0
                } else {
                    4.0 * rng.next_f64() - 2.0
                } as f32,
                presence_penalty: if coin(&mut rng) {
                    0.0
                } else {
                    4.0 * rng.next_f64() - 2.0
                } as f32,
                logit_bias: vec![((rng.next_u64() % vocab_size as u64) as u32, 3.0)],
                seed: Some(case),
            };
            let history: Vec<u32> = (0..20)
                .map(|_| (rng.next_u64() % vocab_size as u64) as u32)
                .collect();
            let (prompt, generated) = history.split_at(10);
            let mut s = sampler(p.clone(), vocab_size, prompt);
            for &id in generated {
                s.accept(id);
            }
            let d = s.distribution(&logits).unwrap();
            let expected = brute_force(&p, &logits, prompt, generated);
            eprintln!("case {case}: {p:?}");
            assert_close(&d, &expected, 1e-6);
            let total: f64 = d.iter().map(|&(_, p)| f64::from(p)).sum();
            assert!((total - 1.0).abs() < 1e-4, "case {case}: total {total}");
            let token = s.sample(&logits).unwrap();
            assert!(
                d.iter().any(|&(id, _)| id == token),
                "case {case}: drew {token}"
            );
        }
    }

    #[test]
    fn nucleus_boundary_matches_a_full_sort() {
        let mut rng = Xoshiro256StarStar::seed_from_u64(99);
        let mut selection = Vec::new();
        for n in [1, 2, 31, 33, 100, 5000] {
            // Probabilities on a coarse grid, so that many tie.
            let raw: Vec<f64> = (0..n)
                .map(|_| (rng.next_f64() * 50.0).floor() + 1.0)
                .collect();
            let sum: f64 = raw.iter().sum();
            let candidates: Vec<Candidate> = (0u32..)
                .zip(&raw)
                .map(|(id, &w)| Candidate {
                    id,
                    logit: 0.0,
                    prob: w / sum,
                })
                .collect();
            let mut sorted = candidates.clone();
            sorted.sort_by(by_probability);
            for top_p in [0.01, 0.3, 0.5, 0.9, 0.999] {
                let mut cumulative = 0.0;
                let expected = sorted.iter().find(|c| {
                    cumulative += c.prob;
                    cumulative >= top_p
                });
                let got = nucleus_boundary(&candidates, top_p, &mut selection);
                assert_eq!(
                    got.map(|c| c.id),
                    expected.map(|c| c.id),
                    "n = {n}, top_p = {top_p}"
                );
                let mut kept = candidates.clone();
                top_p_cut(&mut kept, top_p, &mut selection);
                assert!(kept.windows(2).all(|w| w[0].id < w[1].id), "id order");
            }
        }
    }

    #[test]
    fn survivor_floor_keeps_the_whole_nucleus_and_little_else() {
        let logits = normal_logits(49_152, 3.0, 8);
        let (max, _) = max_and_check(&logits);
        let mut weights = vec![0.0; logits.len()];
        let mut block_sums = vec![0.0; logits.len().div_ceil(BLOCK)];
        for temperature in [0.3, 0.8, 1.5, 4.0] {
            let z_max = f64::from(max) / temperature;
            let z = weigh_all(&logits, temperature, z_max, &mut weights, &mut block_sums);
            let mut sorted = weights.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            for top_p in [0.1, 0.5, 0.9, 0.99] {
                let mut cumulative = 0.0;
                let nucleus = 1 + sorted
                    .iter()
                    .position(|w| {
                        cumulative += w / z;
                        cumulative >= top_p
                    })
                    .unwrap();
                let floor = survivor_floor(&weights, z, top_p, 0.0);
                let collected = weights.iter().filter(|&&w| w >= floor).count();
                assert!(
                    sorted[nucleus - 1] >= floor,
                    "t = {temperature}, p = {top_p}"
                );
                // One bucket past the nucleus at most: a bucket's values are within 12.5%.
                let limit = sorted[nucleus - 1] / 1.125 * 0.999;
                let at_most = sorted.iter().filter(|&&w| w >= limit).count();
                assert!(collected <= at_most, "t = {temperature}, p = {top_p}");
            }
        }
    }

    #[test]
    fn blocked_draw_matches_a_plain_walk() {
        let logits = normal_logits(1000, 2.0, 4);
        let mut weights = vec![0.0; 1000];
        let mut block_sums = vec![0.0; 1000usize.div_ceil(BLOCK)];
        let total = weigh_all(&logits, 1.0, 8.0, &mut weights, &mut block_sums);
        let mut rng = Xoshiro256StarStar::seed_from_u64(5);
        for _ in 0..10_000 {
            let target = rng.next_f64() * total;
            let plain = draw(target, (0u32..).zip(weights.iter().copied()));
            assert_eq!(draw_blocked(target, &weights, &block_sums), plain);
        }
        let last = draw(f64::INFINITY, (0u32..).zip(weights.iter().copied()));
        assert_eq!(draw_blocked(total * 2.0, &weights, &block_sums), last);
    }

    #[test]
    fn the_draw_is_the_inverse_cdf_in_id_order() {
        // Probabilities 0.25, 0.25, 0.5: u < 0.25 draws 0, u < 0.5 draws 1, otherwise 2.
        let logits = logits_of(&[0.25, 0.25, 0.5]);
        for seed in 0..50 {
            let u = Xoshiro256StarStar::seed_from_u64(seed).next_f64();
            let expected = if u < 0.25 {
                0
            } else if u < 0.5 {
                1
            } else {
                2
            };
            // The whole-vocabulary path, then two paths through the candidate list.
            for (min_p, top_p) in [(0.0, 1.0), (0.1, 1.0), (0.0, 0.99)] {
                let p = SamplingParams {
                    min_p,
                    top_p,
                    seed: Some(seed),
                    ..SamplingParams::default()
                };
                assert_eq!(sampler(p, 3, &[]).sample(&logits).unwrap(), expected);
            }
        }
    }

    const GOLDEN: [u32; 12] = [28, 822, 707, 859, 80, 904, 427, 175, 574, 635, 539, 188];

    #[test]
    fn a_seed_draws_the_same_tokens_as_when_this_test_was_written() {
        // Pins the whole pipeline (generator, exponential, sums, draw order) against change.
        // Uniform logits, from arithmetic alone: no libm function that could differ by platform.
        let mut rng = Xoshiro256StarStar::seed_from_u64(9);
        let logits: Vec<f32> = (0..1000)
            .map(|_| (rng.next_f64() * 12.0 - 6.0) as f32)
            .collect();
        let p = SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed: Some(1234),
            ..SamplingParams::default()
        };
        let mut s = sampler(p, 1000, &[]);
        let tokens: Vec<u32> = (0..12)
            .map(|_| {
                let token = s.sample(&logits).unwrap();
                s.accept(token);
                token
            })
            .collect();
        assert_eq!(tokens, GOLDEN);
    }

    #[test]
    fn draws_stay_inside_the_surviving_set() {
        let logits = normal_logits(1000, 3.0, 11);
        let p = SamplingParams {
            top_k: 5,
            ..params()
        };
        let mut s = sampler(p, 1000, &[]);
        let allowed = ids(&s.distribution(&logits).unwrap());
        for _ in 0..1000 {
            assert!(allowed.contains(&s.sample(&logits).unwrap()));
        }
    }

    #[test]
    fn a_seed_fixes_the_tokens_and_different_seeds_differ() {
        let logits = normal_logits(49_152, 3.0, 5);
        let run = |seed: u64| {
            let p = SamplingParams {
                temperature: 0.9,
                top_p: 0.95,
                repetition_penalty: 1.2,
                frequency_penalty: 0.3,
                seed: Some(seed),
                ..SamplingParams::default()
            };
            let mut s = sampler(p, 49_152, &[1, 2, 3]);
            (0..50)
                .map(|_| {
                    let token = s.sample(&logits).unwrap();
                    s.accept(token);
                    token
                })
                .collect::<Vec<u32>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn without_a_seed_two_samplers_differ() {
        let logits = vec![0.0f32; 1000];
        let draws = |_: u32| {
            let mut s = sampler(SamplingParams::default(), 1000, &[]);
            (0..20)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<u32>>()
        };
        assert_ne!(draws(0), draws(1));
    }

    #[test]
    fn draw_frequencies_fit_the_distribution() {
        // Pearson's chi-square with a fixed seed: deterministic, far from the 0.1% critical value.
        let logits = normal_logits(12, 1.0, 3);
        let p = SamplingParams {
            temperature: 0.8,
            top_p: 0.97,
            seed: Some(12345),
            ..SamplingParams::default()
        };
        let mut s = sampler(p, 12, &[]);
        let d = s.distribution(&logits).unwrap();
        let n = 50_000;
        let mut counts = [0u32; 12];
        for _ in 0..n {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        let mut chi2 = 0.0;
        for &(id, prob) in &d {
            let expected = f64::from(prob) * f64::from(n);
            assert!(expected >= 5.0, "pick logits without tiny cells");
            chi2 += (f64::from(counts[id as usize]) - expected).powi(2) / expected;
        }
        let drawn: u32 = d.iter().map(|&(id, _)| counts[id as usize]).sum();
        assert_eq!(drawn, n, "every draw is a survivor");
        // Critical values at p = 0.001 for 1..=11 degrees of freedom.
        const CRITICAL: [f64; 11] = [
            10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26,
        ];
        let dof = d.len() - 1;
        assert!(dof >= 3, "{d:?}");
        assert!(chi2 < CRITICAL[dof - 1], "chi2 {chi2} with {dof} dof");
    }

    #[test]
    fn bad_parameters_are_invalid_argument_errors() {
        let bad = [
            SamplingParams {
                temperature: -0.1,
                ..params()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..params()
            },
            SamplingParams {
                temperature: f32::INFINITY,
                ..params()
            },
            SamplingParams {
                top_p: 0.0,
                ..params()
            },
            SamplingParams {
                top_p: 1.01,
                ..params()
            },
            SamplingParams {
                top_p: f32::NAN,
                ..params()
            },
            SamplingParams {
                min_p: -0.01,
                ..params()
            },
            SamplingParams {
                min_p: 1.5,
                ..params()
            },
            SamplingParams {
                min_p: f32::NAN,
                ..params()
            },
            SamplingParams {
                repetition_penalty: 0.0,
                ..params()
            },
            SamplingParams {
                repetition_penalty: -1.0,
                ..params()
            },
            SamplingParams {
                repetition_penalty: f32::NAN,
                ..params()
            },
            SamplingParams {
                frequency_penalty: 2.5,
                ..params()
            },
            SamplingParams {
                frequency_penalty: f32::NAN,
                ..params()
            },
            SamplingParams {
                presence_penalty: -2.01,
                ..params()
            },
            SamplingParams {
                logit_bias: vec![(10, 1.0)],
                ..params()
            },
            SamplingParams {
                logit_bias: vec![(1, f32::INFINITY)],
                ..params()
            },
            SamplingParams {
                logit_bias: vec![(1, f32::NAN)],
                ..params()
            },
        ];
        for p in bad {
            let err = Sampler::new(p.clone(), 10, &[]).err();
            assert!(
                matches!(err, Some(Error::InvalidArgument(_))),
                "{p:?} gave {err:?}"
            );
        }
        assert!(matches!(
            Sampler::new(params(), 10, &[3, 10]).err(),
            Some(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Sampler::new(params(), 0, &[]).err(),
            Some(Error::InvalidArgument(_))
        ));
        let edges = [
            SamplingParams {
                top_p: 1.0,
                min_p: 1.0,
                ..params()
            },
            SamplingParams {
                frequency_penalty: -2.0,
                presence_penalty: 2.0,
                ..params()
            },
            SamplingParams {
                logit_bias: vec![(9, -1e30)],
                ..params()
            },
        ];
        for p in edges {
            assert!(Sampler::new(p, 10, &[9]).is_ok());
        }
    }

    #[test]
    fn nan_and_infinite_logits_are_rejected_not_sampled() {
        for temperature in [0.0, 1.0] {
            let p = SamplingParams {
                temperature,
                ..params()
            };
            let mut s = sampler(p, 3, &[]);
            for bad in [[0.0, f32::NAN, 1.0], [0.0, f32::INFINITY, 1.0]] {
                assert!(matches!(s.sample(&bad), Err(Error::InvalidArgument(_))));
                assert!(matches!(
                    s.distribution(&bad),
                    Err(Error::InvalidArgument(_))
                ));
            }
            let masked = [f32::NEG_INFINITY; 3];
            assert!(matches!(s.sample(&masked), Err(Error::InvalidArgument(_))));
            assert!(matches!(
                s.sample(&[0.0, 1.0]),
                Err(Error::InvalidArgument(_))
            ));
        }
        // A penalty below 1 can push a huge logit over the top.
        let p = SamplingParams {
            repetition_penalty: 0.5,
            ..params()
        };
        let mut s = sampler(p, 2, &[0]);
        assert!(matches!(
            s.sample(&[f32::MAX, 0.0]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn exp_nonpositive_is_within_a_few_ulps_of_exp() {
        let mut x = 0.0f64;
        while x > -708.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 5e-16,
                "exp({x}) = {got}, want {want}"
            );
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-800.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn generator_matches_the_published_sequences() {
        // splitmix64 from 0, then xoshiro256** from the state [1, 2, 3, 4].
        let mut g = Xoshiro256StarStar::seed_from_u64(0);
        assert_eq!(g.s[0], 0xE220_A839_7B1D_CDAF);
        g.s = [1, 2, 3, 4];
        let first: Vec<u64> = (0..4).map(|_| g.next_u64()).collect();
        assert_eq!(first, vec![11520, 0, 1509978240, 1215971899390074240]);
        for _ in 0..1000 {
            let u = g.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
