//! Log-probabilities of generated tokens, as OpenAI-style APIs report them: the chosen token's
//! and the `n` likeliest alternatives at that step.
//!
//! They are read off the model's own distribution (softmax of the raw logits: temperature 1, no
//! penalties or filters), so they say what the model thought, whatever the sampler then did.

/// One generated token and, at the same step, the likeliest alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)`, likeliest first (ties: lower id first).
    pub top: Vec<(u32, f32)>,
}

/// The most alternatives a caller may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// `log(sum(exp(logits)))`, accumulated in f64.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    (f64::from(max) + sum.ln()) as f32
}

/// The chosen token's log-probability and the `n` likeliest tokens', in one pass over the
/// logits plus a selection that keeps only `n` candidates (no sort of the vocabulary).
pub fn token_logprob(logits: &[f32], token: u32, n: usize) -> TokenLogprob {
    let lse = log_sum_exp(logits);
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (id, &x) in logits.iter().enumerate() {
            // `top` stays sorted, likeliest first; a newcomer must beat the last to enter.
            if top.len() == n && top.last().is_some_and(|&(_, last)| x <= last) {
                continue;
            }
            let at = top.partition_point(|&(_, y)| y >= x);
            top.insert(at, (id as u32, x));
            top.truncate(n);
        }
    }
    let logprob_of = |x: f32| x - lse;
    TokenLogprob {
        token,
        logprob: logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&x| logprob_of(x)),
        top: top.into_iter().map(|(id, x)| (id, logprob_of(x))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_log_softmax() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let lse = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln() as f32;
        let r = token_logprob(&logits, 4, 3);
        assert!((r.logprob - (0.5 - lse)).abs() < 1e-6);
        let ids: Vec<u32> = r.top.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3, 0]); // the tie between 1 and 3 goes to the lower id
        assert!((r.top[0].1 - (3.0 - lse)).abs() < 1e-6);
        let total: f32 = logits.iter().map(|&x| (x - lse).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn zero_alternatives_and_large_vocabularies() {
        assert!(token_logprob(&[0.0, 0.0], 1, 0).top.is_empty());
        let logits: Vec<f32> = (0..49_152)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        let r = token_logprob(&logits, 0, 20);
        let mut sorted: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let want: Vec<u32> = sorted[..20].iter().map(|&(id, _)| id).collect();
        let got: Vec<u32> = r.top.iter().map(|&(id, _)| id).collect();
        assert_eq!(got, want);
    }
}
