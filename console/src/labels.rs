//! Labels (`key=value` pairs on a host) and label selectors, the language of dynamic
//! groups, `label=` filters and rollout targets.
//!
//! A selector is a comma-separated list of requirements that must all hold:
//!
//! | requirement | holds when |
//! |---|---|
//! | `key=value` (or `key==value`) | the label is set and matches `value` |
//! | `key!=value` | the label is unset or does not match `value` |
//! | `key in (v1, v2)` | the label is set and matches one of the values |
//! | `key notin (v1, v2)` | the label is unset or matches none of them |
//! | `key` | the label is set |
//! | `!key` | the label is unset |
//!
//! Values may contain `*`, which matches any run of characters (`site in (ferry-*)`).
//! Keys and values are 1-63 characters of `a-z A-Z 0-9 . _ - /` (values also `*`).

use std::collections::BTreeMap;
use std::fmt;

/// The longest key or value.
pub const MAX_LEN: usize = 63;
/// The most labels a host carries (agent and operator labels together).
pub const MAX_LABELS: usize = 64;

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// Why a selector did not parse: what was expected, at which character (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.position + 1, self.message)
    }
}

impl std::error::Error for SelectorError {}

/// Checks a label key (`what` names it in the message).
pub fn check_key(key: &str) -> Result<(), String> {
    check_word(key, false).map_err(|why| format!("label key {key:?}: {why}"))
}

/// Checks a label value.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    check_word(value, false).map_err(|why| format!("label {key:?}: value {value:?}: {why}"))
}

fn check_word(word: &str, glob: bool) -> Result<(), &'static str> {
    if word.is_empty() || word.len() > MAX_LEN {
        return Err("must be 1 to 63 characters");
    }
    if !word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c) || (glob && c == '*'))
    {
        return Err("may contain only a-z, A-Z, 0-9, '.', '_', '-' and '/'");
    }
    Ok(())
}

/// `pattern` with `*` as "any run of characters" against `text`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser { text, pos: 0 };
        let mut requirements = Vec::new();
        p.skip_space();
        if p.at_end() {
            return Err(p.error("an empty selector; expected a requirement such as site=ferry-7"));
        }
        loop {
            requirements.push(p.requirement()?);
            p.skip_space();
            if p.at_end() {
                break;
            }
            p.expect(',')?;
        }
        Ok(Selector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let any = |vals: &[String], v: &str| vals.iter().any(|p| glob_match(p, v));
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, p) => labels.get(k).is_some_and(|v| glob_match(p, v)),
            Requirement::NotEquals(k, p) => !labels.get(k).is_some_and(|v| glob_match(p, v)),
            Requirement::In(k, ps) => labels.get(k).is_some_and(|v| any(ps, v)),
            Requirement::NotIn(k, ps) => !labels.get(k).is_some_and(|v| any(ps, v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            position: self.pos,
            message: message.into(),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), SelectorError> {
        self.skip_space();
        match self.peek() {
            Some(got) if got == c => {
                self.pos += 1;
                Ok(())
            }
            Some(got) => Err(self.error(format!("expected '{c}', found '{got}'"))),
            None => Err(self.error(format!("expected '{c}', found the end"))),
        }
    }

    fn word(&mut self, what: &str, glob: bool) -> Result<String, SelectorError> {
        self.skip_space();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "._-/".contains(c) || (glob && c == '*'))
        {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        if word.is_empty() {
            return Err(match self.peek() {
                Some(c) => self.error(format!("expected {what}, found '{c}'")),
                None => self.error(format!("expected {what}, found the end")),
            });
        }
        check_word(word, glob).map_err(|why| SelectorError {
            position: start,
            message: format!("{what} {word:?} {why}"),
        })?;
        Ok(word.to_string())
    }

    fn values(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect('(')?;
        let mut values = vec![self.word("a value", true)?];
        loop {
            self.skip_space();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    values.push(self.word("a value", true)?);
                }
                Some(')') => {
                    self.pos += 1;
                    return Ok(values);
                }
                Some(c) => return Err(self.error(format!("expected ',' or ')', found '{c}'"))),
                None => return Err(self.error("expected ')', found the end")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_space();
        if self.peek() == Some('!') {
            self.pos += 1;
            return Ok(Requirement::Absent(self.word("a label key", false)?));
        }
        let key = self.word("a label key", false)?;
        self.skip_space();
        let rest = &self.text[self.pos..];
        if rest.starts_with("!=") {
            self.pos += 2;
            Ok(Requirement::NotEquals(key, self.word("a value", true)?))
        } else if rest.starts_with("==") {
            self.pos += 2;
            Ok(Requirement::Equals(key, self.word("a value", true)?))
        } else if rest.starts_with('=') {
            self.pos += 1;
            Ok(Requirement::Equals(key, self.word("a value", true)?))
        } else if keyword(rest, "notin") {
            self.pos += 5;
            Ok(Requirement::NotIn(key, self.values()?))
        } else if keyword(rest, "in") {
            self.pos += 2;
            Ok(Requirement::In(key, self.values()?))
        } else if rest.is_empty() || rest.starts_with(',') {
            Ok(Requirement::Exists(key))
        } else {
            Err(self.error(format!(
                "expected '=', '!=', 'in', 'notin', ',' or the end after {key:?}"
            )))
        }
    }
}

/// `rest` starts with `word` followed by a space or `(`.
fn keyword(rest: &str, word: &str) -> bool {
    rest.strip_prefix(word)
        .is_some_and(|r| r.starts_with(|c: char| c.is_whitespace() || c == '('))
}

/// Effective labels: the agent's own, overlaid with the operator's.
pub fn effective(
    agent: &BTreeMap<String, String>,
    operator: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all = agent.clone();
    all.extend(operator.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(text: &str) -> Selector {
        Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_requirement_kind_matches_as_documented() {
        let ferry = labels(&[("site", "ferry-7"), ("hw", "pi4")]);
        let store = labels(&[("site", "store-2")]);
        let cases = [
            ("site=ferry-7", true, false),
            ("site==ferry-7", true, false),
            ("site!=ferry-7", false, true),
            ("site in (ferry-*), hw=pi4", true, false),
            ("site in (store-1, store-2)", false, true),
            ("site notin (ferry-*)", false, true),
            ("hw", true, false),
            ("!hw", false, true),
            ("hw!=nuc", true, true),
            ("site=*", true, true),
            ("  site = ferry-7 ,hw in(pi4)  ", true, false),
        ];
        for (text, on_ferry, on_store) in cases {
            let s = sel(text);
            assert_eq!(s.matches(&ferry), on_ferry, "{text} on ferry");
            assert_eq!(s.matches(&store), on_store, "{text} on store");
        }
    }

    #[test]
    fn parse_errors_say_what_was_expected_and_where() {
        let cases = [
            ("", 1, "empty selector"),
            ("site=", 6, "expected a value, found the end"),
            ("site in ferry", 9, "expected '('"),
            ("site in (a,", 12, "expected a value"),
            ("site in (a b)", 12, "expected ',' or ')'"),
            ("site=a;drop", 7, "expected ','"),
            ("=x", 1, "expected a label key"),
            ("site ~ x", 6, "expected '=', '!=', 'in', 'notin'"),
            ("s*te=x", 2, "expected '=', '!='"),
        ];
        for (text, pos, needle) in cases {
            let e = Selector::parse(text).unwrap_err();
            assert!(
                e.to_string().contains(needle) && e.position + 1 == pos,
                "{text:?}: {e} (wanted {needle:?} at {pos})"
            );
        }
        let long = "k".repeat(64);
        assert!(Selector::parse(&long)
            .unwrap_err()
            .message
            .contains("1 to 63"));
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        for (p, t, want) in [
            ("ferry-*", "ferry-7", true),
            ("ferry-*", "ferry-", true),
            ("ferry-*", "ferr", false),
            ("*-7", "ferry-7", true),
            ("f*y*7", "ferry-7", true),
            ("f*z*7", "ferry-7", false),
            ("a*a", "a", false),
            ("*", "", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn operator_labels_win() {
        let all = effective(
            &labels(&[("site", "ferry-7"), ("hw", "pi4")]),
            &labels(&[("site", "ferry-8")]),
        );
        assert_eq!(all, labels(&[("site", "ferry-8"), ("hw", "pi4")]));
    }
}
