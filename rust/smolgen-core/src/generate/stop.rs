//! Stop strings: text that could still turn into one is held back, and generation ends before
//! the first one, whose text is never shown.

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
