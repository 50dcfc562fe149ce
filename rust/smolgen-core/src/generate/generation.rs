//! One request's generation: prefill the prompt (what the prefix cache does not already hold, in
//! slices of at most 512 tokens), then decode one token at a time against the KV cache, sampling
//! each from the last position's logits.
//!
//! A [`Generation`] is a step machine so that callers can stream: each [`Generation::step`]
//! produces one token and the text it completes, with stop strings held back and UTF-8 kept whole.

use std::sync::Arc;
use std::time::Instant;

use crate::cache::kv::KvCache;
use crate::engine::{BatchItem, LogitsFor, PREFILL_CHUNK};
use crate::error::{Error, Result};
use crate::generate::constraint::{Constraint, Grammar};
use crate::generate::logprobs::{token_logprob, TokenLogprob, MAX_TOP_LOGPROBS};
use crate::generate::sampler::{Sampler, SamplingParams};
use crate::generate::stop::{StopMatcher, StopScan};
use crate::generate::utf8::Utf8Stream;
use crate::Model;

/// Tokens generated when the caller gives no `max_tokens` (fewer if the context window is full).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// Every setting of one request: the one definition that the Python binding fills from keyword
/// arguments, and whose defaults every caller gets by leaving a setting out.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Upper bound on generated tokens; `None`: [`DEFAULT_MAX_TOKENS`], or what is left of the
    /// context window if that is less (see [`check_context`]).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these; their text is never emitted.
    pub stop: Vec<String>,
    /// Report each token's log-probability and this many alternatives (0..=20); `None`: off.
    pub logprobs: Option<usize>,
    /// Start from the model's prefix cache where the prompt's beginning is stored there, and
    /// leave this request's keys and values to it at the end.
    pub prefix_cache: bool,
    /// What the generated text must match (structured output); `None`: anything.
    pub grammar: Option<Grammar>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            logprobs: None,
            prefix_cache: true,
            grammar: None,
        }
    }
}

/// The number of tokens a request may generate, after checking that `prompt_tokens` and
/// `max_tokens` fit a context window of `context_length`: `max_tokens` itself, or unset, the
/// default ([`DEFAULT_MAX_TOKENS`] or what the window has left, at least 1). `subject` names what
/// the prompt was made from in the error (`"prompt"` or `"messages"`).
pub fn check_context(
    context_length: usize,
    prompt_tokens: usize,
    max_tokens: Option<usize>,
    subject: &'static str,
) -> Result<usize> {
    match max_tokens {
        Some(0) => Err(Error::invalid("max_tokens must be at least 1")),
        Some(n) if prompt_tokens.saturating_add(n) > context_length => Err(
            Error::context_exceeded(context_length, prompt_tokens, n, subject),
        ),
        Some(n) => Ok(n),
        // Not even one token fits: the prompt alone is too long.
        None if prompt_tokens >= context_length => Err(Error::context_exceeded(
            context_length,
            prompt_tokens,
            0,
            subject,
        )),
        None => Ok(DEFAULT_MAX_TOKENS.min(context_length - prompt_tokens)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One generated token and the text it releases (possibly empty: held back or incomplete).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub token_id: u32,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
    pub logprob: Option<TokenLogprob>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// The forward pass over the prompt (the part the prefix cache did not hold).
    pub prefill_s: f64,
    /// From the start of the request to the first sampled token.
    pub ttft_s: f64,
    /// Every later step (forward + sample), in order.
    pub decode_steps_s: Vec<f64>,
    /// Of all the steps, the time spent working out which tokens a grammar allows next (0
    /// without one): structured output's own cost.
    pub constraint_s: f64,
}

impl Timings {
    pub fn decode_s(&self) -> f64 {
        self.decode_steps_s.iter().sum()
    }

    /// The `q`-th percentile (0..=100, nearest rank) of the decode steps' durations.
    pub fn decode_percentile_s(&self, q: f64) -> Option<f64> {
        percentile(&self.decode_steps_s, q)
    }
}

/// The `q`-th percentile (0..=100) of `values` by the nearest-rank method: the smallest value
/// that at least `q`% of the values do not exceed, always one of the values. The one definition
/// of p50/p95 that timings and benchmarks report. `None` for no values or `q` out of range.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=100.0).contains(&q) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub timings: Timings,
    /// One per generated token when log-probabilities were asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Bytes the request's KV cache held at the end (allocated capacity).
    pub kv_cache_bytes: usize,
    /// Prompt tokens whose keys and values came from the prefix cache instead of a prefill.
    pub cached_tokens: usize,
    /// The stop string that ended generation, if one did.
    pub stop_sequence: Option<String>,
}

pub struct Generation {
    model: Arc<Model>,
    prompt: Vec<u32>,
    options: GenerateOptions,
    /// `options.max_tokens`, or its default for this prompt.
    max_tokens: usize,
    cache: KvCache,
    sampler: Sampler,
    constraint: Option<Constraint>,
    generated: Vec<u32>,
    utf8: Utf8Stream,
    stops: StopMatcher,
    text: String,
    finish: Option<FinishReason>,
    timings: Timings,
    logprobs: Vec<TokenLogprob>,
    started: Instant,
    cached_tokens: usize,
    kv_cache_bytes: usize,
}

impl Generation {
    pub fn new(model: Arc<Model>, prompt: Vec<u32>, options: GenerateOptions) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::invalid(
                "the prompt is empty: it must have at least one token",
            ));
        }
        if let Some(n) = options.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(Error::invalid(format!(
                "logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"
            )));
        }
        // Checked here too, so a bad prompt fails when the request is made, not at its first step.
        model.engine.check_token_ids(&prompt)?;
        let cfg = &model.engine.cfg;
        let max_tokens = check_context(
            cfg.context_length,
            prompt.len(),
            options.max_tokens,
            "prompt",
        )?;
        let sampler = Sampler::new(options.sampling.clone(), cfg.vocab_size, &prompt)?;
        let constraint = match &options.grammar {
            Some(grammar) => Some(model.grammars()?.compile(grammar)?),
            None => None,
        };
        let (cache, cached_tokens) = if options.prefix_cache {
            // At most all but one prompt token: the last one's logits are the first answer.
            let found = model.prefix_cache().lookup(&prompt, prompt.len() - 1);
            match found {
                Some((shared, n)) => (shared.copy_prefix(n)?, n),
                None => (model.engine.new_cache(), 0),
            }
        } else {
            (model.engine.new_cache(), 0)
        };
        Ok(Generation {
            max_tokens,
            cache,
            cached_tokens,
            kv_cache_bytes: 0,
            stops: StopMatcher::new(options.stop.clone()),
            model,
            prompt,
            options,
            sampler,
            constraint,
            generated: Vec::new(),
            utf8: Utf8Stream::default(),
            text: String::new(),
            finish: None,
            timings: Timings::default(),
            logprobs: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Generates one token. `Ok(None)` once generation has finished.
    pub fn step(&mut self) -> Result<Option<Chunk>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let input = next_input(&self.prompt, self.cached_tokens, &self.generated);
        let logits = self
            .model
            .engine
            .forward(input, &mut self.cache, LogitsFor::Last)?;
        self.take_step(&logits, t0).map(Some)
    }

    /// One step of each generation, their forward passes batched into one pass over the
    /// weights: each sequence keeps its own cache, sampler and stop strings, and gets exactly
    /// the token a lone [`Generation::step`] would give it. Finished generations give `Ok(None)`.
    /// All must run on the same model.
    pub fn step_many(gens: &mut [&mut Generation]) -> Vec<Result<Option<Chunk>>> {
        let t0 = Instant::now();
        // A long prompt's prefill runs alone (in slices); the rest share one pass.
        let batchable = |g: &Generation| {
            g.finish.is_none()
                && next_input(&g.prompt, g.cached_tokens, &g.generated).len() <= PREFILL_CHUNK
        };
        let active: Vec<usize> = (0..gens.len()).filter(|&i| batchable(gens[i])).collect();
        if active.len() > 1 {
            let model = Arc::clone(&gens[active[0]].model);
            let same_model = active.iter().all(|&i| Arc::ptr_eq(&gens[i].model, &model));
            let mut items = Vec::with_capacity(active.len());
            if same_model {
                for g in gens.iter_mut().filter(|g| batchable(g)) {
                    let g: &mut Generation = g;
                    let input = next_input(&g.prompt, g.cached_tokens, &g.generated);
                    items.push(BatchItem {
                        tokens: input,
                        cache: &mut g.cache,
                        which: LogitsFor::Last,
                    });
                }
                // A failed batch leaves every cache as it was (nothing is advanced before the
                // end of a pass): step each one alone then, so each gets its own error.
                if let Ok(logits) = model.engine.forward_batch(&mut items) {
                    drop(items);
                    let mut logits = logits.into_iter();
                    return gens
                        .iter_mut()
                        .map(|g| {
                            if !batchable(g) {
                                return g.step(); // finished (None), or a long prefill
                            }
                            let l = logits.next().unwrap_or_else(|| Ok(Vec::new()))?;
                            g.take_step(&l, t0).map(Some)
                        })
                        .collect();
                }
            }
        }
        gens.iter_mut().map(|g| g.step()).collect()
    }

    /// Samples from a step's logits and turns the token into text; `t0` is the step's start.
    fn take_step(&mut self, logits: &[f32], t0: Instant) -> Result<Chunk> {
        if logits.len() != self.model.engine.cfg.vocab_size {
            return Err(Error::invalid(format!(
                "a step produced {} logits, expected {}",
                logits.len(),
                self.model.engine.cfg.vocab_size
            )));
        }
        let first = self.generated.is_empty();
        if first {
            self.timings.prefill_s = t0.elapsed().as_secs_f64();
        }
        let token = match &mut self.constraint {
            Some(constraint) => {
                let t = Instant::now();
                let allowed = constraint.allowed()?;
                self.timings.constraint_s += t.elapsed().as_secs_f64();
                let token = self
                    .sampler
                    .sample_allowed(logits, Some(allowed.as_slice()))?;
                let t = Instant::now();
                constraint.accept(token)?;
                self.timings.constraint_s += t.elapsed().as_secs_f64();
                token
            }
            None => self.sampler.sample(logits)?,
        };
        self.sampler.accept(token);
        self.generated.push(token);
        let logprob = self
            .options
            .logprobs
            .map(|n| token_logprob(logits, token, n));
        if first {
            self.timings.ttft_s = self.started.elapsed().as_secs_f64();
        } else {
            self.timings.decode_steps_s.push(t0.elapsed().as_secs_f64());
        }

        let tokenizer = &self.model.tokenizer;
        let mut text = String::new();
        let mut finish = None;
        if tokenizer.is_end_of_generation(token) {
            finish = Some(FinishReason::Stop);
            text = self.flush().0;
        } else {
            if !tokenizer.is_special(token) {
                let piece = self.utf8.push(tokenizer.token_bytes(token)?);
                match self.stops.push(&piece) {
                    StopScan::Continue(t) => text = t,
                    StopScan::Stopped(t) => {
                        text = t;
                        finish = Some(FinishReason::Stop);
                    }
                }
            }
            if finish.is_none() && self.generated.len() >= self.max_tokens {
                let (tail, stopped) = self.flush();
                text.push_str(&tail);
                finish = Some(if stopped {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                });
            }
        }
        self.text.push_str(&text);
        self.finish = finish;
        if finish.is_some() {
            self.release_cache()?;
        }
        if let Some(lp) = &logprob {
            self.logprobs.push(lp.clone());
        }
        Ok(Chunk {
            token_id: token,
            text,
            finish_reason: finish,
            logprob,
        })
    }

    /// At the end: releases an incomplete character (as U+FFFD) and the text held back for a
    /// stop string that never came. Returns the text and whether a stop string still matched.
    fn flush(&mut self) -> (String, bool) {
        let tail = self.utf8.finish();
        match self.stops.push(&tail) {
            StopScan::Continue(mut t) => {
                t.push_str(&self.stops.finish());
                (t, false)
            }
            StopScan::Stopped(t) => (t, true),
        }
    }

    /// Hands the KV cache to the model's prefix cache (when asked to) and keeps its size for the
    /// completion's report.
    fn release_cache(&mut self) -> Result<()> {
        self.kv_cache_bytes = self.kv_cache_bytes.max(self.cache.allocated_bytes());
        if !self.options.prefix_cache || self.cache.is_empty() {
            return Ok(());
        }
        let cache = std::mem::replace(&mut self.cache, KvCache::new(0, 0));
        // The cache holds the prompt and every generated token but the last (never fed back).
        let mut tokens = self.prompt.clone();
        tokens.extend_from_slice(&self.generated);
        self.model.prefix_cache().insert(&tokens, cache)
    }

    /// Prompt tokens taken from the prefix cache rather than prefilled.
    pub fn cached_tokens(&self) -> usize {
        self.cached_tokens
    }

    /// Runs to the end.
    pub fn run(mut self) -> Result<Completion> {
        while self.step()?.is_some() {}
        Ok(self.completion())
    }

    /// What has been generated so far (the final result once [`Self::step`] has returned `None`).
    pub fn completion(&self) -> Completion {
        Completion {
            text: self.text.clone(),
            token_ids: self.generated.clone(),
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
            prompt_tokens: self.prompt.len(),
            timings: self.timings.clone(),
            logprobs: self.options.logprobs.map(|_| self.logprobs.clone()),
            kv_cache_bytes: self.kv_cache_bytes.max(self.cache.allocated_bytes()),
            cached_tokens: self.cached_tokens,
            stop_sequence: self.stops.matched().map(str::to_owned),
        }
    }
}

/// The tokens the next forward pass runs: the uncached prompt first, then the last token.
fn next_input<'a>(prompt: &'a [u32], cached: usize, generated: &'a [u32]) -> &'a [u32] {
    match generated.last() {
        None => &prompt[cached..],
        Some(last) => std::slice::from_ref(last),
    }
}

/// A request abandoned half-way (a client that hung up) still leaves its prompt's keys and
/// values for the next one: a retry then starts where this one stopped.
impl Drop for Generation {
    fn drop(&mut self) {
        if self.finish.is_none() {
            // Nothing to report from a destructor; the cache is an optimisation.
            let _ = self.release_cache();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{check_context, percentile, Timings, DEFAULT_MAX_TOKENS};
    use crate::Error;

    #[test]
    fn max_tokens_defaults_to_what_the_window_has_left() {
        assert_eq!(
            check_context(8192, 10, None, "prompt").unwrap(),
            DEFAULT_MAX_TOKENS
        );
        assert_eq!(check_context(96, 90, None, "prompt").unwrap(), 6);
        assert_eq!(check_context(96, 95, None, "prompt").unwrap(), 1);
        assert_eq!(check_context(96, 90, Some(6), "prompt").unwrap(), 6);
        assert!(matches!(
            check_context(96, 10, Some(0), "prompt"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn the_context_error_says_what_did_not_fit() {
        let err = check_context(96, 90, Some(10), "prompt").unwrap_err();
        assert!(matches!(
            err,
            Error::ContextLengthExceeded {
                max_context: 96,
                requested: 100,
                prompt_tokens: 90,
                max_new_tokens: 10,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "This model's maximum context length is 96 tokens. However, you requested 100 tokens \
             (90 in the prompt, 10 for the completion). Please reduce the length of the prompt \
             or max_tokens."
        );
        let err = check_context(96, 96, None, "messages").unwrap_err();
        assert!(matches!(
            err,
            Error::ContextLengthExceeded {
                requested: 96,
                max_new_tokens: 0,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "This model's maximum context length is 96 tokens. However, your messages resulted \
             in 96 tokens. Please reduce the length of the messages."
        );
    }

    #[test]
    fn percentiles_are_one_of_the_values() {
        assert_eq!(percentile(&[0.0, 10.0], 95.0), Some(10.0));
        assert_eq!(percentile(&[3.0], 95.0), Some(3.0));
        assert_eq!(percentile(&[5.0, 1.0, 3.0, 2.0, 4.0], 50.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
    }

    #[test]
    fn decode_percentiles_use_the_nearest_rank() {
        let t = Timings {
            decode_steps_s: (1..=20).rev().map(f64::from).collect(),
            ..Timings::default()
        };
        assert_eq!(t.decode_percentile_s(50.0), Some(10.0));
        assert_eq!(t.decode_percentile_s(95.0), Some(19.0));
        assert_eq!(t.decode_percentile_s(100.0), Some(20.0));
        assert_eq!(t.decode_percentile_s(0.0), Some(1.0));
        assert_eq!(Timings::default().decode_percentile_s(50.0), None);
    }
}
