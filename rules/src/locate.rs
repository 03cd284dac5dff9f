//! Finding the line of an error's field in YAML text, so `processor validate` can say
//! `rules.yaml:42: rule 3 ("access"): steps[1].regex.pattern: invalid regex`.
//!
//! serde keeps no positions once a value is decoded, so this walks the text by indentation.
//! Easy to get wrong: flow style (`{field: line, pattern: '…'}`, `[a, b]`). Inside it the walk
//! stops and answers the line where the flow value starts, which is still the right place.

use super::Place;

/// A path component: a map key or a list index.
enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

/// One meaningful line: its number (from 1), indentation, and text after it.
struct Line<'a> {
    number: u64,
    indent: usize,
    text: &'a str,
}

impl Line<'_> {
    /// The column where the line's key starts, after any `- ` list markers.
    fn key_column(&self) -> usize {
        let mut column = self.indent;
        let mut text = self.text;
        while let Some(rest) = text.strip_prefix("- ") {
            let trimmed = rest.trim_start_matches(' ');
            column += 2 + (rest.len() - trimmed.len());
            text = trimmed;
        }
        column
    }

    /// The text from the key column on.
    fn key_text(&self) -> &str {
        &self.text[self.key_column() - self.indent..]
    }

    fn is_item(&self) -> bool {
        self.text.starts_with("- ") || self.text == "-"
    }
}

/// The line of `place`'s field in `text`, or of the nearest enclosing item found.
pub(super) fn line_of(text: &str, place: &Place) -> Option<u64> {
    let lines: Vec<Line<'_>> = text
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim_start_matches(' ');
            (!trimmed.is_empty() && !trimmed.starts_with('#')).then(|| Line {
                number: i as u64 + 1,
                indent: raw.len() - trimmed.len(),
                text: trimmed.trim_end(),
            })
        })
        .collect();
    let mut path = Vec::new();
    if let Some(number) = place.rule_number {
        path.push(Part::Key("rules"));
        path.push(Part::Index(number.checked_sub(1)?));
    }
    parse_path(&place.field, &mut path);

    let mut region = 0..lines.len();
    let mut found = None;
    for part in path {
        let next = match part {
            Part::Key(key) => find_key(&lines, region.clone(), key),
            Part::Index(n) => find_item(&lines, region.clone(), n),
        };
        let Some((line, value)) = next else { break };
        found = Some(lines[line].number);
        match value {
            Some(value) => region = value,
            None => break,
        }
    }
    found
}

/// `steps[1].regex.pattern` → `steps`, 1, `regex`, `pattern`. An empty `[]` ends the path.
fn parse_path<'a>(field: &'a str, path: &mut Vec<Part<'a>>) {
    for segment in field.split('.') {
        let mut pieces = segment.split('[');
        if let Some(key) = pieces.next().filter(|key| !key.is_empty()) {
            path.push(Part::Key(key));
        }
        for index in pieces {
            match index.trim_end_matches(']').parse() {
                Ok(n) => path.push(Part::Index(n)),
                Err(_) => return,
            }
        }
    }
}

/// The line of `key` at the region's key level, and its value's block region (none when the
/// value is on the key's line).
fn find_key(
    lines: &[Line<'_>],
    region: std::ops::Range<usize>,
    key: &str,
) -> Option<(usize, Option<std::ops::Range<usize>>)> {
    let level = lines.get(region.start)?.key_column();
    let index = region.clone().find(|&i| {
        let line = &lines[i];
        line.key_column() == level
            && line
                .key_text()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })?;
    let inline = lines[index]
        .key_text()
        .split_once(':')
        .is_some_and(|(_, value)| !value.trim().is_empty());
    if inline {
        return Some((index, None));
    }
    let end = (index + 1..region.end)
        .find(|&j| {
            let line = &lines[j];
            line.indent < level || (line.indent == level && !line.is_item())
        })
        .unwrap_or(region.end);
    Some((index, (index + 1 < end).then_some(index + 1..end)))
}

/// The line of list item `n` in the region, and the item's region.
fn find_item(
    lines: &[Line<'_>],
    region: std::ops::Range<usize>,
    n: usize,
) -> Option<(usize, Option<std::ops::Range<usize>>)> {
    let indent = region
        .clone()
        .filter(|&i| lines[i].is_item())
        .map(|i| lines[i].indent)
        .min()?;
    let items: Vec<usize> = region
        .clone()
        .filter(|&i| lines[i].indent == indent && lines[i].is_item())
        .collect();
    let &start = items.get(n)?;
    let end = items.get(n + 1).copied().unwrap_or(region.end);
    Some((start, Some(start..end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(rule: Option<usize>, field: &str) -> Place {
        Place {
            origin: "r.yaml".into(),
            rule_number: rule,
            rule_name: None,
            field: field.into(),
            line: None,
        }
    }

    const TEXT: &str = "version: 1
max_line_bytes: 0
common:
  - regex: {field: line, pattern: 'x'}
rules:
  # a comment
  - name: a
    files: [a.log]
  - name: b
    files:
      - 'b*.log'
      - 'c[.log'
    steps:
    - set:
        field: x
        value: 1
    - regex:
        field: line
        pattern: '('
";

    #[test]
    fn fields_are_found_in_block_and_flow_style() {
        assert_eq!(line_of(TEXT, &place(None, "max_line_bytes")), Some(2));
        assert_eq!(
            line_of(TEXT, &place(None, "common[0].regex.pattern")),
            Some(4)
        );
        assert_eq!(line_of(TEXT, &place(Some(1), "name")), Some(7));
        assert_eq!(line_of(TEXT, &place(Some(2), "files[1]")), Some(12));
        assert_eq!(
            line_of(TEXT, &place(Some(2), "steps[1].regex.pattern")),
            Some(19)
        );
        assert_eq!(
            line_of(TEXT, &place(Some(2), "steps[0].set.value")),
            Some(16)
        );
        assert_eq!(line_of(TEXT, &place(Some(1), "files[0]")), Some(8));
        assert_eq!(line_of(TEXT, &place(Some(9), "name")), Some(5));
    }
}
