//! Turning a stream of token bytes into a stream of text: never split a UTF-8 character, never
//! show text that belongs to a stop string.

/// Accumulates bytes and hands out the longest prefix that is complete UTF-8.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes`; returns the text that is now complete. An incomplete character at the end
    /// waits for the next call; bytes that can never be valid become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: from_utf8 just said these bytes are valid.
                    out.push_str(
                        std::str::from_utf8(&self.pending[consumed..consumed + valid])
                            .unwrap_or_default(),
                    );
                    consumed += valid;
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed += bad;
                        }
                        None => break, // an incomplete character: wait for more bytes
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        out
    }

    /// The end of the stream: whatever is left is an incomplete character.
    pub fn finish(&mut self) -> String {
        let out = if self.pending.is_empty() {
            String::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        };
        self.pending.clear();
        out
    }
}

/// Holds back text that could still turn into a stop string, and finds the stop when it comes.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released.
    held: String,
    matched: Option<usize>,
}

/// What one piece of new text leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopScan {
    /// Text safe to release now (maybe empty); no stop string yet.
    Continue(String),
    /// A stop string was found: the text before it, to release; generation ends.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            matched: None,
        }
    }

    pub fn push(&mut self, text: &str) -> StopScan {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopScan::Continue(std::mem::take(&mut self.held));
        }
        // The earliest stop string wins.
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, which)) = found {
            self.matched = Some(which);
            let before = self.held[..at].to_string();
            self.held.clear();
            return StopScan::Stopped(before);
        }
        // Keep the longest tail that is a prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let release = self.held[..keep].to_string();
        self.held.drain(..keep);
        StopScan::Continue(release)
    }

    /// The stop string that ended generation, once one has.
    pub fn matched(&self) -> Option<&str> {
        self.matched.map(|i| self.stops[i].as_str())
    }

    /// The end of generation without a stop string: release what was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_waits_for_whole_characters() {
        let mut s = Utf8Stream::default();
        let bytes = "東京".as_bytes();
        assert_eq!(s.push(&bytes[..2]), "");
        assert_eq!(s.push(&bytes[2..4]), "東");
        assert_eq!(s.push(&bytes[4..]), "京");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn utf8_stream_replaces_invalid_bytes() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(s.push(b"\xe6\x9d"), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_matcher_holds_back_prefixes() {
        let mut m = StopMatcher::new(vec!["\n\nUser:".into()]);
        assert_eq!(m.push("Hello"), StopScan::Continue("Hello".into()));
        assert_eq!(m.push(" there\n"), StopScan::Continue(" there".into()));
        assert_eq!(m.push("\nUs"), StopScan::Continue("".into()));
        assert_eq!(m.push("er: hi"), StopScan::Stopped("".into()));
    }

    #[test]
    fn stop_matcher_releases_a_false_alarm() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("the EN"), StopScan::Continue("the ".into()));
        assert_eq!(m.push("D"), StopScan::Stopped("".into()));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("EN"), StopScan::Continue("".into()));
        assert_eq!(m.push("ough"), StopScan::Continue("ENough".into()));
        assert_eq!(m.push("E"), StopScan::Continue("".into()));
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut m = StopMatcher::new(vec!["b".into(), "a".into()]);
        assert_eq!(m.matched(), None);
        assert_eq!(m.push("xaby"), StopScan::Stopped("x".into()));
        assert_eq!(m.matched(), Some("a"));
    }
}
