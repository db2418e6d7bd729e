//! "Did you mean …?" for names a user mistyped.

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn near_misses_are_found_and_strangers_are_not() {
        let names = ["alertSummary", "alertStatus", "alertId"];
        assert_eq!(super::closest("alertSumary", names), Some("alertSummary"));
        assert_eq!(super::closest("alertsummary", names), Some("alertSummary"));
        assert_eq!(super::closest("hostname", names), None);
    }
}
