//! JSON text written by hand on the hot paths, byte for byte what `serde_json` writes.
//!
//! Why not `serde_json::to_writer`: for a collected record, its generic escaping (one table
//! lookup and branch per byte), the id's `write!` and the `fmt` machinery behind it were over
//! half of the collector's CPU. Here a string is scanned eight bytes at a time and copied in
//! runs, numbers go through `itoa`, and hex through a table. The unit tests hold the output to
//! `serde_json`'s for any string and any value.

use serde_json::Value;

use crate::{key_cmp, Fields};

/// Appends `text` as a JSON string, quoted and escaped exactly as `serde_json` does: `"` and
/// `\` escaped, control characters as `\b \t \n \f \r` or `\u00XX`, everything else verbatim.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if let Some(word) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !may_need_escape(word) {
                at += 8;
                continue;
            }
        }
        let byte = bytes[at];
        let escape = ESCAPES[usize::from(byte)];
        if escape != 0 {
            out.extend_from_slice(&bytes[copied..at]);
            write_escape(out, byte, escape);
            copied = at + 1;
        }
        at += 1;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

/// Appends `object` as compact JSON, keys in the map's order: what `serde_json::to_writer`
/// writes for it, with the strings (most of a record) escaped the fast way.
pub fn write_object(out: &mut Vec<u8>, object: &serde_json::Map<String, Value>) {
    out.push(b'{');
    for (i, (key, value)) in object.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// As [`write_object`], with `extra` fields merged in key order as if they had been inserted
/// into `object` (an extra replaces a field of the same name). Each extra's value is JSON text
/// already encoded, and the extras are sorted by key: fields every record of a batch shares
/// (`processed_at`, the pod's metadata) are encoded once, not copied into each record.
pub fn write_object_with(
    out: &mut Vec<u8>,
    object: &serde_json::Map<String, Value>,
    extra: &[(&str, &[u8])],
) {
    write_pairs_with(out, object.iter().map(|(k, v)| (k.as_str(), v)), extra);
}

/// As [`write_object_with`], for a record's [`Fields`] in whatever order they are.
pub fn write_fields_with(out: &mut Vec<u8>, fields: &Fields, extra: &[(&str, &[u8])]) {
    write_pairs_with(out, fields.iter_in_key_order(), extra);
}

fn write_pairs_with<'a>(
    out: &mut Vec<u8>,
    pairs: impl Iterator<Item = (&'a str, &'a Value)>,
    extra: &[(&str, &[u8])],
) {
    debug_assert!(
        extra.windows(2).all(|w| w[0].0 < w[1].0),
        "extras sorted by key"
    );
    out.push(b'{');
    let mut first = true;
    let mut separate = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let mut extra = extra.iter().peekable();
    for (key, value) in pairs {
        let mut replaced = false;
        while let Some((name, json)) = extra.next_if(|(name, _)| key_cmp(name, key).is_le()) {
            separate(out);
            write_str(out, name);
            out.push(b':');
            out.extend_from_slice(json);
            replaced |= *name == key;
        }
        if replaced {
            continue;
        }
        separate(out);
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    for (name, json) in extra {
        separate(out);
        write_str(out, name);
        out.push(b':');
        out.extend_from_slice(json);
    }
    out.push(b'}');
}

/// Appends `value` as compact JSON, as `serde_json` writes it.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => match number.as_u64() {
            Some(n) => write_u64(out, n),
            // Negative and floating point numbers are rare in records: serde_json's own
            // formatting keeps them exactly as before.
            None => serde_json::to_writer(&mut *out, number).expect("a number serialises"),
        },
        Value::String(text) => write_str(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(object) => write_object(out, object),
    }
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `n` as 16 lowercase hex digits (a record id's source part).
pub fn write_hex16(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out.extend_from_slice(&digits);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Per byte: 0 when written as is, the letter after the backslash otherwise (`u` for `\u00XX`).
static ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

fn write_escape(out: &mut Vec<u8>, byte: u8, escape: u8) {
    if escape == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', escape]);
    }
}

/// Whether any of the eight bytes may need escaping: below 0x20, `"` or `\`. Never false
/// when one does (the bit tricks are exact for "any byte"), so a clean word is skipped whole.
fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    below_space | quote | backslash != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_merge_in_key_order_and_replace_a_field_of_their_name() {
        let object: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"a":1,"kubernetes":"old","m":"x\"y","z":[true,null]}"#)
                .unwrap();
        let extras: [(&str, &[u8]); 3] = [
            ("b", b"2"),
            ("kubernetes", br#"{"pod":"p"}"#),
            ("processed_at", br#""now""#),
        ];
        let mut out = Vec::new();
        write_object_with(&mut out, &object, &extras);
        let mut expected = object.clone();
        for (key, json) in extras {
            expected.insert(key.into(), serde_json::from_slice(json).unwrap());
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        let mut fields = Fields::new();
        for (key, value) in object.iter().rev() {
            fields.insert(key.as_str(), value.clone());
        }
        let mut from_fields = Vec::new();
        write_fields_with(&mut from_fields, &fields, &extras);
        assert_eq!(
            String::from_utf8(from_fields).unwrap(),
            serde_json::to_string(&expected).unwrap(),
            "fields in reverse order are written in key order"
        );
        let mut out = Vec::new();
        write_object_with(&mut out, &serde_json::Map::new(), &extras[..1]);
        assert_eq!(out, br#"{"b":2}"#);
        let mut out = Vec::new();
        write_object_with(&mut out, &object, &[]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&object).unwrap()
        );
    }
    use proptest::prelude::*;

    fn written(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn every_single_character_below_0x80_is_escaped_as_serde_json_does() {
        for byte in 0u8..0x80 {
            let text = char::from(byte).to_string();
            assert_eq!(
                written(&text),
                serde_json::to_string(&text).unwrap(),
                "{byte:#x}"
            );
        }
    }

    #[test]
    fn escapes_are_found_at_every_position_of_a_word() {
        for at in 0..20 {
            for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é"] {
                let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(19 - at));
                assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
            }
        }
    }

    #[test]
    fn numbers_and_hex() {
        let mut out = Vec::new();
        write_hex16(&mut out, 0xabc);
        out.push(b' ');
        write_u64(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, b"0000000000000abc 18446744073709551615");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_value_is_written_as_serde_json_writes_it(value in json_value()) {
            let mut out = Vec::new();
            write_value(&mut out, &value);
            prop_assert_eq!(out, serde_json::to_vec(&value).unwrap());
        }

        #[test]
        fn any_string_is_written_as_serde_json_writes_it(text in any::<String>()) {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn any_mostly_ascii_string_is_written_as_serde_json_writes_it(
            text in "[ -~\\x00-\\x1f\"\\\\é€]{0,80}"
        ) {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }
    }
}
