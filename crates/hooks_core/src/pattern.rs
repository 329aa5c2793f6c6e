//! Event types and the webhook patterns that select them.
//!
//! An event type is a sequence of segments separated by `/` or `.` (`policy/bound`,
//! `invoice.created`). A pattern is either the catch-all `*`, or segments in the same form where
//! a segment may be `*`, matching exactly one segment of any content: `claim/*` matches
//! `claim/opened` but not `claim` or `claim/opened/late`, and `*.created` matches
//! `invoice.created`. Separators must agree: `claim/*` does not match `claim.opened`, just as
//! the exact pattern `claim/opened` does not.

use crate::Error;

/// Longest event type or pattern accepted, in bytes.
pub const MAX_LEN: usize = 255;

fn is_separator(c: char) -> bool {
    c == '/' || c == '.'
}

/// Checks the characters and segments shared by event types and patterns.
fn check_segments(field: &str, s: &str, what: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid(field, format!("{what} must not be empty")));
    }
    if s.len() > MAX_LEN {
        return Err(Error::invalid(field, format!("{what} is {} bytes long; the limit is {MAX_LEN}", s.len())));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(field, format!("{what} {s:?} contains the character {c:?}; whitespace and control characters are not allowed")));
    }
    if s.split(is_separator).any(str::is_empty) {
        return Err(Error::invalid(field, format!("{what} {s:?} has an empty segment (segments are separated by '/' or '.')")));
    }
    Ok(())
}

/// Validates an event type as published: non-empty segments, no wildcards.
pub fn validate_event_type(field: &str, event_type: &str) -> Result<(), Error> {
    check_segments(field, event_type, "event type")?;
    if event_type.contains('*') {
        return Err(Error::invalid(field, format!("event type {event_type:?} contains '*'; wildcards belong in webhook patterns, not in events")));
    }
    Ok(())
}

/// Validates a webhook pattern: `*`, or segments where `*` may stand for a whole segment.
pub fn validate_pattern(field: &str, pattern: &str) -> Result<(), Error> {
    if pattern == "*" {
        return Ok(());
    }
    check_segments(field, pattern, "pattern")?;
    if let Some(seg) = pattern.split(is_separator).find(|seg| seg.contains('*') && *seg != "*") {
        return Err(Error::invalid(field, format!("pattern {pattern:?} has the segment {seg:?}; '*' must stand for a whole segment, as in 'claim/*' or '*.created'")));
    }
    Ok(())
}

/// The most patterns a webhook's `event_types` may list.
pub const MAX_EXTRA_PATTERNS: usize = 50;

/// Validates a webhook's further patterns (`event_types`): at most [`MAX_EXTRA_PATTERNS`], none
/// NULL, each a valid pattern; errors name the element (`event_types[2]`, 1-based as in SQL).
pub fn validate_patterns(field: &str, patterns: &[Option<&str>]) -> Result<(), Error> {
    if patterns.len() > MAX_EXTRA_PATTERNS {
        return Err(Error::invalid(field, format!("{field} lists {} patterns; at most {MAX_EXTRA_PATTERNS}", patterns.len())));
    }
    for (i, p) in patterns.iter().enumerate() {
        let element = format!("{field}[{}]", i + 1);
        match p {
            Some(p) => validate_pattern(&element, p)?,
            None => return Err(Error::invalid(&element, format!("{element} is NULL; list patterns only"))),
        }
    }
    Ok(())
}

/// True when the pattern contains a wildcard, i.e. cannot be matched by plain equality.
pub fn is_wildcard(pattern: &str) -> bool {
    pattern.contains('*')
}

/// Does `pattern` select `event_type`? Both are assumed valid; invalid input never panics and
/// simply compares as text.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if !is_wildcard(pattern) {
        return pattern == event_type;
    }
    let mut p = pattern;
    let mut e = event_type;
    loop {
        let (pseg, prest) = split_first(p);
        let (eseg, erest) = split_first(e);
        let seg_ok = if pseg == "*" { !eseg.is_empty() } else { pseg == eseg };
        if !seg_ok {
            return false;
        }
        match (prest, erest) {
            (None, None) => return true,
            (Some((psep, p2)), Some((esep, e2))) if psep == esep => {
                p = p2;
                e = e2;
            }
            _ => return false,
        }
    }
}

/// The literal text before a wildcard pattern's first `*`: `claim/` for `claim/*`, empty for
/// `*` and `*.created`; `None` for an exact pattern. `hooks.webhooks.pattern_prefix` holds it.
pub fn literal_prefix(pattern: &str) -> Option<&str> {
    pattern.find('*').map(|i| &pattern[..i])
}

/// The literal prefixes a wildcard pattern must have to select `event_type`: the empty string
/// and each prefix ending with a separator (`""` and `"claim/"` for `claim/opened`). Since a
/// `*` stands for a whole segment, a matching pattern's [`literal_prefix`] is one of them, so
/// `hooks.match` looks up only the patterns with these prefixes.
pub fn candidate_prefixes(event_type: &str) -> Vec<&str> {
    let mut out = vec![""];
    out.extend(
        event_type
            .char_indices()
            .filter(|&(_, c)| is_separator(c))
            .map(|(i, c)| &event_type[..i + c.len_utf8()]),
    );
    out
}

/// Splits off the first segment: `("claim", Some(('/', "opened")))`.
fn split_first(s: &str) -> (&str, Option<(char, &str)>) {
    match s.find(is_separator) {
        Some(i) => {
            let sep = s[i..].chars().next().unwrap_or('/');
            (&s[..i], Some((sep, &s[i + sep.len_utf8()..])))
        }
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_and_catch_all() {
        assert!(matches("policy/bound", "policy/bound"));
        assert!(!matches("policy/bound", "policy/bounds"));
        assert!(matches("*", "policy/bound"));
        assert!(matches("*", "x"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix("claim/*"), Some("claim/"));
        assert_eq!(literal_prefix("*.created"), Some(""));
        assert_eq!(literal_prefix("*"), Some(""));
        assert_eq!(literal_prefix("a/*/c"), Some("a/"));
        assert_eq!(literal_prefix("policy/bound"), None);
        assert_eq!(candidate_prefixes("claim/opened"), vec!["", "claim/"]);
        assert_eq!(candidate_prefixes("a/b.c/d"), vec!["", "a/", "a/b.", "a/b.c/"]);
        assert_eq!(candidate_prefixes("x"), vec![""]);
        assert_eq!(candidate_prefixes("é/ü"), vec!["", "é/"]);
    }

    #[test]
    fn segment_wildcards() {
        assert!(matches("claim/*", "claim/opened"));
        assert!(matches("claim/*", "claim/settled"));
        assert!(!matches("claim/*", "claim"));
        assert!(!matches("claim/*", "claim/opened/late"));
        assert!(!matches("claim/*", "policy/opened"));
        assert!(matches("*.created", "invoice.created"));
        assert!(!matches("*.created", "invoice.updated"));
        assert!(!matches("*.created", "a.invoice.created"));
        assert!(matches("a/*/c", "a/b/c"));
        assert!(matches("*/*", "claim/opened"));
    }

    #[test]
    fn separators_must_agree() {
        assert!(!matches("claim/*", "claim.opened"));
        assert!(!matches("claim/opened", "claim.opened"));
        assert!(matches("claim.*", "claim.opened"));
    }

    #[test]
    fn pattern_validation() {
        for ok in ["*", "policy/bound", "claim/*", "*.created", "a.b/c", "*/*"] {
            validate_pattern("event_type", ok).unwrap();
        }
        for bad in ["", "claim/", "/claim", "claim//x", "cl*im/x", "claim/**", "a b", "a\nb", &"x".repeat(256)] {
            let err = validate_pattern("event_type", bad).unwrap_err();
            assert_eq!(err.field, "event_type", "{bad:?}");
        }
    }

    #[test]
    fn event_type_validation() {
        validate_event_type("event", "policy/bound").unwrap();
        validate_event_type("event", "invoice.created").unwrap();
        assert!(validate_event_type("event", "*").is_err());
        assert!(validate_event_type("event", "claim/*").is_err());
        assert!(validate_event_type("event", "").is_err());
        assert!(validate_event_type("event", "a..b").is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,6}"
    }

    proptest! {
        #[test]
        fn never_panics(p in "\\PC{0,40}", e in "\\PC{0,40}") {
            let _ = matches(&p, &e);
            let _ = validate_pattern("p", &p);
            let _ = validate_event_type("e", &e);
        }

        #[test]
        fn event_matches_itself_and_catch_all(segs in prop::collection::vec(segment(), 1..5), dot in any::<bool>()) {
            let sep = if dot { "." } else { "/" };
            let e = segs.join(sep);
            prop_assert!(validate_event_type("e", &e).is_ok());
            prop_assert!(matches(&e, &e));
            prop_assert!(matches("*", &e));
        }

        #[test]
        fn a_matching_patterns_prefix_is_a_candidate(
            segs in prop::collection::vec(segment(), 1..6),
            stars in prop::collection::vec(any::<bool>(), 6),
            dots in prop::collection::vec(any::<bool>(), 6),
        ) {
            // an event type with mixed separators, and a pattern with any segments starred
            let mut e = String::new();
            let mut p = String::new();
            for (i, seg) in segs.iter().enumerate() {
                if i > 0 {
                    let sep = if dots[i] { '.' } else { '/' };
                    e.push(sep);
                    p.push(sep);
                }
                e.push_str(seg);
                p.push_str(if stars[i] { "*" } else { seg });
            }
            prop_assert!(matches(&p, &e));
            let cands = candidate_prefixes(&e);
            match literal_prefix(&p) {
                Some(prefix) => prop_assert!(cands.contains(&prefix), "{p:?} -> {prefix:?} not in {cands:?}"),
                None => prop_assert_eq!(&p, &e),
            }
            prop_assert!(cands.contains(&literal_prefix("*").unwrap()));
        }

        #[test]
        fn wildcard_replacing_any_segment_matches(segs in prop::collection::vec(segment(), 1..5), idx in 0usize..5) {
            let e = segs.join("/");
            let mut p = segs.clone();
            let i = idx % p.len();
            p[i] = "*".into();
            let p = p.join("/");
            prop_assert!(validate_pattern("p", &p).is_ok());
            prop_assert!(matches(&p, &e));
            // one segment more or less never matches
            let longer = format!("{e}/x");
            prop_assert!(!(p != "*" && matches(&p, &longer)));
        }
    }

    #[test]
    fn pattern_lists_name_the_bad_element() {
        assert!(validate_patterns("event_types", &[Some("policy/bound"), Some("claim/*"), Some("*")]).is_ok());
        assert!(validate_patterns("event_types", &[]).is_ok());
        let err = validate_patterns("event_types", &[Some("policy/bound"), Some("claim/x*")]).unwrap_err();
        assert!(err.to_string().starts_with("invalid event_types[2]:"), "{err}");
        let err = validate_patterns("event_types", &[None]).unwrap_err();
        assert!(err.to_string().starts_with("invalid event_types[1]:"), "{err}");
        let many: Vec<Option<&str>> = vec![Some("a/b"); MAX_EXTRA_PATTERNS + 1];
        assert!(validate_patterns("event_types", &many).unwrap_err().to_string().contains("at most 50"));
    }
}
