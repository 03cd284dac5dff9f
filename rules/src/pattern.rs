//! A regex step's pattern, matched at the cost of the part it has to look at.
//!
//! The common layouts end in "the rest of the line": `^(?P<timestamp>…) - (?P<rest>.*)$`.
//! Capturing that last group makes the regex engine walk every byte of the rest (13 % of the
//! processor's CPU on the demo logs), although the group is just "from here to the end". So a
//! pattern that ends in a named `(?P<name>.*)$` is also compiled without it: the head is
//! matched, and the group is the text after the head's match. This gives the same captures as
//! the whole pattern whenever that text holds no newline (`.` does not match one, unless `(?s)`
//! is set); when it does, the whole pattern decides, as it always would.
//!
//! Why that is exact: a match of the whole pattern starts with a match of the head at the same
//! place, so the head finds the leftmost start too; and at that start the engine prefers the
//! head's own first match, after which `.*$` cannot fail when no newline follows.

use parking_lot::Mutex;
use regex::{CaptureLocations, Regex, RegexBuilder};
use regex_syntax::hir::{Dot, Hir, HirKind, Look};

/// A compiled regex step pattern.
#[derive(Debug)]
pub(super) struct FieldPattern {
    whole: Regex,
    /// Where `whole`'s groups are written, kept between records: `Regex::captures` allocates
    /// them afresh for every call.
    whole_slots: Mutex<CaptureLocations>,
    head: Option<Head>,
}

/// The pattern without its last `(?P<name>.*)$`.
#[derive(Debug)]
struct Head {
    regex: Regex,
    slots: Mutex<CaptureLocations>,
    /// Index of the rest-of-the-line group in the whole pattern.
    tail_group: usize,
    /// `(?s)`: the group takes newlines as well.
    tail_takes_newlines: bool,
}

/// The captures of one match.
pub(super) struct Found<'a> {
    text: &'a str,
    slots: &'a CaptureLocations,
    tail: Option<(usize, &'a str)>,
}

impl Found<'_> {
    /// The text of capture group `index`, if it took part in the match.
    pub(super) fn get(&self, index: usize) -> Option<&str> {
        match self.tail {
            Some((group, tail)) if group == index => Some(tail),
            _ => self
                .slots
                .get(index)
                .map(|(start, end)| &self.text[start..end]),
        }
    }
}

impl FieldPattern {
    /// Wraps `whole`, compiled with `builder`'s settings; the head is built the same way.
    pub(super) fn new(whole: Regex, size_limit: usize) -> Self {
        let head = head_of(&whole, size_limit);
        Self {
            whole_slots: Mutex::new(whole.capture_locations()),
            whole,
            head,
        }
    }

    /// The whole pattern (for its capture names).
    pub(super) fn regex(&self) -> &Regex {
        &self.whole
    }

    /// Hands `with` the captures of the leftmost-first match in `text` (as the whole pattern
    /// gives them), or `None` when there is no match.
    pub(super) fn with_captures<R>(
        &self,
        text: &str,
        with: impl FnOnce(Option<Found<'_>>) -> R,
    ) -> R {
        let with = match &self.head {
            None => with,
            Some(head) => {
                let by_head = with_slots(&head.regex, &head.slots, |slots| {
                    // No head match means no whole match: every whole match starts with one.
                    let Some(head_match) = head.regex.captures_read(slots, text) else {
                        return Ok(with(None));
                    };
                    let tail = &text[head_match.end()..];
                    if !head.tail_takes_newlines && memchr::memchr(b'\n', tail.as_bytes()).is_some()
                    {
                        // The whole pattern decides, as it always would.
                        return Err(with);
                    }
                    Ok(with(Some(Found {
                        text,
                        slots,
                        tail: Some((head.tail_group, tail)),
                    })))
                });
                match by_head {
                    Ok(result) => return result,
                    Err(with) => with,
                }
            }
        };
        with_slots(&self.whole, &self.whole_slots, |slots| {
            let matched = self.whole.captures_read(slots, text).is_some();
            with(matched.then_some(Found {
                text,
                slots,
                tail: None,
            }))
        })
    }
}

/// Runs `with` on `regex`'s kept slots, or on fresh ones when another thread holds them (a
/// rules test or `explain` beside the stage).
fn with_slots<R>(
    regex: &Regex,
    kept: &Mutex<CaptureLocations>,
    with: impl FnOnce(&mut CaptureLocations) -> R,
) -> R {
    match kept.try_lock() {
        Some(mut slots) => with(&mut slots),
        None => with(&mut regex.capture_locations()),
    }
}

/// The head of `whole` when it ends in a named `(.*)` followed by `$` (end of text).
fn head_of(whole: &Regex, size_limit: usize) -> Option<Head> {
    let hir = regex_syntax::parse(whole.as_str()).ok()?;
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let [head @ .., last_group, end] = parts.as_slice() else {
        return None;
    };
    if *end.kind() != HirKind::Look(Look::End) {
        return None;
    }
    let HirKind::Capture(group) = last_group.kind() else {
        return None;
    };
    group.name.as_ref()?;
    let HirKind::Repetition(repeat) = group.sub.kind() else {
        return None;
    };
    if (repeat.min, repeat.max, repeat.greedy) != (0, None, true) {
        return None;
    }
    let tail_takes_newlines = if *repeat.sub == Hir::dot(Dot::AnyChar) {
        true
    } else if *repeat.sub == Hir::dot(Dot::AnyCharExceptLF) {
        false
    } else {
        return None;
    };
    let tail_group = usize::try_from(group.index).ok()?;
    let head_pattern = Hir::concat(head.to_vec()).to_string();
    let regex = RegexBuilder::new(&head_pattern)
        .size_limit(size_limit)
        .build()
        .ok()?;
    // The head must number its groups as the whole pattern does, the tail being the last.
    let same_groups = regex.captures_len() + 1 == whole.captures_len()
        && tail_group + 1 == whole.captures_len()
        && regex
            .capture_names()
            .zip(whole.capture_names())
            .all(|(a, b)| a == b);
    same_groups.then_some(Head {
        slots: Mutex::new(regex.capture_locations()),
        regex,
        tail_group,
        tail_takes_newlines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(p: &str) -> FieldPattern {
        FieldPattern::new(Regex::new(p).unwrap(), 1 << 20)
    }

    /// Each group's text in a match, or no match.
    type Groups = Option<Vec<Option<String>>>;

    /// Every group's text, as the whole regex gives it and as the pattern does.
    fn both(p: &FieldPattern, text: &str) -> (Groups, Groups) {
        let n = p.whole.captures_len();
        let whole = p.whole.captures(text).map(|c| {
            (1..n)
                .map(|i| c.get(i).map(|m| m.as_str().to_owned()))
                .collect()
        });
        let ours = p.with_captures(text, |found| {
            found.map(|f| (1..n).map(|i| f.get(i).map(str::to_owned)).collect())
        });
        (whole, ours)
    }

    const LAYOUTS: [&str; 5] = [
        r"^(?P<timestamp>[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:,[0-9]{3})?) - (?P<rest>.*)$",
        r"^(?P<logger>[A-Za-z0-9_.\-]+) - (?P<log_level>[A-Z]+) - (?P<message>.*)$",
        r"(?P<a>x+)(?P<b>y?)(?P<rest>.*)$",
        r"(?s)^(?P<a>[a-z]+):(?P<rest>.*)$",
        r"^(?P<a>a|ab)(?P<rest>.*)$",
    ];

    #[test]
    fn the_layouts_of_the_default_rules_use_the_head() {
        for p in &LAYOUTS[..2] {
            assert!(pattern(p).head.is_some(), "{p}");
        }
    }

    #[test]
    fn patterns_not_ending_in_the_rest_of_the_line_are_matched_whole() {
        for p in [
            r"^(?P<endpoint>[^?]*)",
            r"^(?P<a>\w+) (.*)$",
            r"^(?P<a>\w+) (?P<rest>.*?)$",
            r"(?m)^(?P<a>\w+) (?P<rest>.*)$",
            r"^(?P<a>\w+) (?P<rest>.+)$",
            r"^(?P<a>\w+) (?P<rest>.*)",
        ] {
            assert!(pattern(p).head.is_none(), "{p}");
        }
    }

    #[test]
    fn a_newline_after_the_head_leaves_the_decision_to_the_whole_pattern() {
        let p = pattern(LAYOUTS[0]);
        let line = "2026-11-22 10:30:45,123 - one\ntwo";
        assert_eq!(both(&p, line).0, None);
        assert_eq!(both(&p, line).1, None);
        let p = pattern(LAYOUTS[2]);
        let (whole, ours) = both(&p, "xx\nxxy rest");
        assert_eq!(whole, ours);
        assert!(whole.is_some());
    }

    #[test]
    fn kept_slots_held_elsewhere_give_the_same_captures() {
        let p = pattern(LAYOUTS[0]);
        let line = "2026-11-22 10:30:45,123 - the rest";
        let free = both(&p, line);
        let _held = p.head.as_ref().unwrap().slots.lock();
        let _held_whole = p.whole_slots.lock();
        assert_eq!(both(&p, line), free);
        assert_eq!(free.1.unwrap()[1].as_deref(), Some("the rest"));
    }

    proptest! {
        #[test]
        fn the_head_gives_what_the_whole_pattern_gives(
            which in 0..LAYOUTS.len(),
            text in "[0-9a-zA-Z:,\\- \\n{}xy]{0,40}|2026-11-22 10:30:45,123 - [a-z \\n-]{0,30}"
        ) {
            let p = pattern(LAYOUTS[which]);
            let (whole, ours) = both(&p, &text);
            prop_assert_eq!(whole, ours);
        }
    }
}
