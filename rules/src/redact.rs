//! Redaction: masking secrets and personal data in record fields.
//!
//! Easy to get wrong: cost on clean text. Almost no line holds a secret, so one `RegexSet`
//! pass decides whether any pattern matches at all; only then are the matching patterns run
//! to replace, and only then is a new string allocated.

use sidecar_record::Fields;
use std::borrow::Cow;

use regex::{Captures, Regex, RegexSet, RegexSetBuilder};
use serde_json::Value;

use super::spec::{RedactBuiltin, RedactSpec};
use super::step::Compile;
use super::{build_regex, RulesError};

/// Fields a redaction without `fields:` leaves alone: they are the processor's own.
const PROTECTED: [&str; 3] = ["id", "source_file", "collected_at"];

/// One pattern and how its matches are replaced.
#[derive(Debug)]
struct Pattern {
    regex: Regex,
    /// Replace only capture group `secret` (keeping the rest of the match).
    group: bool,
    /// Mask only matches whose digits pass the Luhn check (card numbers).
    luhn: bool,
}

/// A compiled `redact:` step.
#[derive(Debug)]
pub(super) struct Redactor {
    /// Fields to mask; empty: every string field except [`PROTECTED`].
    fields: Vec<String>,
    set: RegexSet,
    patterns: Vec<Pattern>,
    mask: String,
}

/// The regex of a built-in and whether it masks only its `secret` group.
fn builtin(which: RedactBuiltin) -> (&'static str, bool, bool) {
    match which {
        RedactBuiltin::Email => (
            r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
            false,
            false,
        ),
        RedactBuiltin::BearerToken => (
            r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]+=*)",
            true,
            false,
        ),
        RedactBuiltin::BasicAuthUrl => (
            r"(?i)\b[a-z][a-z0-9+.\-]*://(?P<secret>[^/\s:@]+:[^/\s@]*)@",
            true,
            false,
        ),
        RedactBuiltin::AwsKey => (
            r"(?:\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{16}\b|(?i:aws_?secret_?access_?key)\W{0,3}(?P<secret>[A-Za-z0-9/+=]{40}))",
            true,
            false,
        ),
        RedactBuiltin::CreditCard => (r"\b\d(?:[ \-]?\d){12,18}\b", false, true),
    }
}

impl Redactor {
    /// Compiles a `redact:` step: the fields, the built-in patterns and the custom ones.
    pub(super) fn compile(s: RedactSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        if s.builtins.is_empty() && s.patterns.is_empty() {
            return Err(c.invalid_step("give `builtins`, `patterns`, or both"));
        }
        let fields = c.fields(s.fields)?;
        let custom = s
            .patterns
            .iter()
            .enumerate()
            .map(|(i, pattern)| build_regex(pattern, c.scope, &c.at(&format!("patterns[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let builtins_at = c.at("builtins");
        Redactor::new(fields, &s.builtins, custom, s.mask, &mut |pattern: &str| {
            build_regex(pattern, c.scope, &builtins_at)
        })
    }

    /// Builds the redactor; `compile` is the caller's size-limited regex builder, which
    /// names the field in its error.
    pub(super) fn new<E>(
        fields: Vec<String>,
        builtins: &[RedactBuiltin],
        custom: Vec<Regex>,
        mask: String,
        compile: &mut dyn FnMut(&str) -> Result<Regex, E>,
    ) -> Result<Redactor, E> {
        let mut patterns = Vec::new();
        // Credentials in URLs first: `user:pass@host` would otherwise be half eaten as an
        // email address, leaving the user name.
        let mut builtins = builtins.to_vec();
        builtins.sort_by_key(|which| match which {
            RedactBuiltin::BasicAuthUrl => 0,
            RedactBuiltin::BearerToken => 1,
            RedactBuiltin::AwsKey => 2,
            RedactBuiltin::CreditCard => 3,
            RedactBuiltin::Email => 4,
        });
        builtins.dedup();
        for which in builtins {
            let (pattern, group, luhn) = builtin(which);
            patterns.push(Pattern {
                regex: compile(pattern)?,
                group,
                luhn,
            });
        }
        patterns.extend(custom.into_iter().map(|regex| Pattern {
            regex,
            group: false,
            luhn: false,
        }));
        // Each pattern passed the size limit alone; the set gets room for all of them.
        let set = RegexSetBuilder::new(patterns.iter().map(|p| p.regex.as_str()))
            .size_limit(super::REGEX_SIZE_LIMIT_BYTES.saturating_mul(patterns.len().max(1)))
            .build()
            .expect("every pattern of the set compiled alone within the limit");
        Ok(Redactor {
            fields,
            set,
            patterns,
            mask,
        })
    }

    /// Masks in place; returns whether anything changed.
    pub(super) fn apply(&self, record: &mut Fields) -> bool {
        let mut changed = false;
        if self.fields.is_empty() {
            for (key, value) in record.iter_mut() {
                if !PROTECTED.contains(&key) {
                    changed |= self.apply_value(value);
                }
            }
        } else {
            for field in &self.fields {
                if let Some(value) = record.get_mut(field) {
                    changed |= self.apply_value(value);
                }
            }
        }
        changed
    }

    /// Strings are masked; objects and arrays (a decoded JSON payload) are walked.
    fn apply_value(&self, value: &mut Value) -> bool {
        match value {
            Value::String(text) => match self.redact(text) {
                Cow::Borrowed(_) => false,
                Cow::Owned(masked) => {
                    *text = masked;
                    true
                }
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.apply_value(item) | changed),
            Value::Object(map) => map
                .values_mut()
                .fold(false, |changed, item| self.apply_value(item) | changed),
            _ => false,
        }
    }

    /// The text with every match masked; borrowed when nothing matched.
    pub(super) fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let hits = self.set.matches(text);
        if !hits.matched_any() {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        for index in hits.iter() {
            let pattern = &self.patterns[index];
            let replaced = pattern.regex.replace_all(&out, |caps: &Captures<'_>| {
                let whole = caps.get(0).expect("group 0 is the match");
                if pattern.luhn && !luhn_valid(whole.as_str()) {
                    return whole.as_str().to_owned();
                }
                match caps.name("secret").filter(|_| pattern.group) {
                    Some(secret) => {
                        let start = secret.start() - whole.start();
                        let end = secret.end() - whole.start();
                        let w = whole.as_str();
                        format!("{}{}{}", &w[..start], self.mask, &w[end..])
                    }
                    None => self.mask.clone(),
                }
            });
            if let Cow::Owned(text) = replaced {
                out = Cow::Owned(text);
            }
        }
        // Luhn-failing "card numbers" are replaced by themselves: no change after all.
        match out {
            Cow::Owned(masked) if masked == text => Cow::Borrowed(text),
            other => other,
        }
    }
}

/// The Luhn checksum of the digits in `text` (separators ignored).
fn luhn_valid(text: &str) -> bool {
    let (mut sum, mut count) = (0u32, 0usize);
    for digit in text.chars().rev().filter_map(|c| c.to_digit(10)) {
        sum += match (count % 2 == 1, digit * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => digit,
        };
        count += 1;
    }
    (13..=19).contains(&count) && sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(builtins: &[RedactBuiltin]) -> Redactor {
        Redactor::new(
            Vec::new(),
            builtins,
            vec![Regex::new(r"secret-\d+").unwrap()],
            "[REDACTED]".into(),
            &mut |p: &str| Regex::new(p),
        )
        .unwrap()
    }

    #[test]
    fn builtins_mask_what_they_name_and_nothing_else() {
        use RedactBuiltin::*;
        let r = redactor(&[Email, BearerToken, BasicAuthUrl, AwsKey, CreditCard]);
        for (text, want) in [
            ("mail bob.smith+x@example.co.uk now", "mail [REDACTED] now"),
            (
                "Authorization: Bearer eyJhbGciOiJI.UzI1NiJ9-x_y",
                "Authorization: Bearer [REDACTED]",
            ),
            (
                "GET https://admin:hunter2@db.local/x",
                "GET https://[REDACTED]@db.local/x",
            ),
            ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used"),
            (
                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key=[REDACTED]",
            ),
            ("card 4111 1111 1111 1111 ok", "card [REDACTED] ok"),
            ("custom secret-42!", "custom [REDACTED]!"),
        ] {
            assert_eq!(r.redact(text), want, "{text}");
        }
        // Clean text and a 16-digit number failing Luhn are returned as they were, unallocated.
        for text in ["order 1234567812345678 shipped", "GET /users 200 3ms"] {
            assert!(matches!(r.redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn nested_payloads_are_walked_and_protected_fields_left_alone() {
        let r = redactor(&[RedactBuiltin::Email]);
        let mut record = serde_json::json!({
            "id": "a@b.cd-1", "user": {"email": "x@y.org", "tags": ["z@w.io"]}, "n": 1
        })
        .as_object()
        .unwrap()
        .clone()
        .into();
        assert!(r.apply(&mut record));
        assert_eq!(record["id"], "a@b.cd-1");
        assert_eq!(record["user"]["email"], "[REDACTED]");
        assert_eq!(record["user"]["tags"][0], "[REDACTED]");
    }
}
