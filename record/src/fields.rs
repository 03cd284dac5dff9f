//! A record's fields while the processor's rules work on them: a short list of name and value
//! pairs, not a tree.
//!
//! A processed record has a dozen or two fields and the rules look each up many times (fifty
//! lookups a record for the default rules). In a `BTreeMap<String, _>` every lookup compares
//! the key with several others through `memcmp`, and every insert may allocate a node: a fifth
//! of the processor's time went there. Here a lookup scans the list comparing a tag (the key's
//! length and first eight bytes, one integer) and compares bytes only on a tag match, which for
//! keys of up to eight bytes is the match itself.
//!
//! A field's name is a [`FieldName`]: names of up to 24 bytes (all of the default rules' and
//! nearly every payload key) are held inline, so inserting a field allocates for its value
//! only; with `String` names a name was half of a record's 38 allocations.
//!
//! Easy to get wrong: order. The list is in insertion order (a removal moves the last field
//! into the gap); a record is written out through [`Fields::iter_in_key_order`], so output is
//! in key order, byte for byte what a `serde_json::Map` gave.

use std::cell::Cell;
use std::cmp::Ordering;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// The most fields ordered with a list of indexes on the stack (a record
/// has a few dozen at most; more take an allocation).
const ORDER_ON_STACK_MAX: usize = 64;

/// Insertion sort: started from the order the list's previous record had (the rules insert a
/// file's fields in the same order each time), it is close to one comparison per field.
fn insertion_sort<T: Copy>(items: &mut [T], goes_before: impl Fn(T, T) -> bool) {
    for i in 1..items.len() {
        let item = items[i];
        let mut j = i;
        while j > 0 && goes_before(item, items[j - 1]) {
            items[j] = items[j - 1];
            j -= 1;
        }
        items[j] = item;
    }
}

/// A list of field indexes: bytes on the stack for a record's usual few dozen fields.
enum KeyOrder {
    Stack([u8; ORDER_ON_STACK_MAX]),
    Heap(Vec<usize>),
}

impl KeyOrder {
    fn at(&self, i: usize) -> usize {
        match self {
            Self::Stack(items) => usize::from(items[i]),
            Self::Heap(items) => items[i],
        }
    }
}

/// A field's name: inline up to 24 bytes, on the heap beyond.
pub type FieldName = compact_str::CompactString;

/// The fields of a record; see the module docs.
///
/// The tags sit in a list of their own, beside the entries: a lookup scans 8 bytes per field
/// instead of striding over 64-byte entries (the scan was a tenth of the processor's CPU).
#[derive(Debug, Clone, Default)]
pub struct Fields {
    tags: Vec<u64>,
    entries: Vec<Entry>,
    /// The fields' [`presence_bit`]s: a key whose bit is clear is not here, known without a
    /// scan. Most lookups are of fields a record lacks (the rules' `exists: false` guards,
    /// `only_if_missing`, every insert of a new field), and each scanned the whole list.
    present: u64,
    /// The key order worked out last, kept through [`Fields::clear`]: the next record filling
    /// the list mostly has the same fields in the same places, so sorting from that order
    /// takes about one comparison per field. Sorting from insertion order was about a quarter
    /// of writing a record out.
    last_order: Cell<LastOrder>,
}

/// A permutation of `0..len`.
#[derive(Debug, Clone, Copy)]
struct LastOrder {
    len: u8,
    order: [u8; ORDER_ON_STACK_MAX],
}

impl Default for LastOrder {
    fn default() -> Self {
        Self {
            len: 0,
            order: [0; ORDER_ON_STACK_MAX],
        }
    }
}

/// One of 64 bits, chosen by a multiplicative hash of a key's tag (its top six bits).
fn presence_bit(tag: u64) -> u64 {
    1 << (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
}

#[derive(Debug, Clone)]
struct Entry {
    key: FieldName,
    value: Value,
}

/// The key's first eight bytes, big-endian and zero-padded, so that tags order as the keys'
/// prefixes do; with the length, equal tags mean equal keys up to eight bytes.
///
/// Built from whole loads, not by copying the bytes into a zeroed buffer: reading eight bytes
/// back right after a shorter copy into them stalls the CPU (store forwarding fails): with the
/// comparison past the tag below, 3.5 % of the processor's user time (BENCHMARKS.md).
fn tag(key: &str) -> u64 {
    head(key.as_bytes())
}

/// How two keys order, as `str`'s `cmp` does, but decided by their first bytes when those
/// differ, as they mostly do: sorting a payload's keys and merging a record's fields with the
/// batch's shared ones called `memcmp` for every comparison, 4.9 % of the processor's time
/// (BENCHMARKS.md, "Keys compared by their first bytes").
pub fn key_cmp(a: &str, b: &str) -> Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// The first eight bytes of `bytes`, big-endian and zero-padded (see [`tag`]).
fn head(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    if n >= 8 {
        return u64::from_be_bytes(bytes[..8].try_into().expect("eight bytes"));
    }
    // Shorter keys: loads that together cover every byte (they may overlap, and overlapping
    // bytes are equal), each shifted to its bytes' place from the top.
    let at = |i: usize, width: usize| 8 * (8 - i - width);
    if n >= 4 {
        let first = u32::from_be_bytes(bytes[..4].try_into().expect("four bytes"));
        let last = u32::from_be_bytes(bytes[n - 4..].try_into().expect("four bytes"));
        return (u64::from(first) << at(0, 4)) | (u64::from(last) << at(n - 4, 4));
    }
    if n == 0 {
        return 0;
    }
    let byte = |i: usize| u64::from(bytes[i]) << at(i, 1);
    byte(0) | byte(n / 2) | byte(n - 1)
}

/// Whether `stored` is `key`, given that their tags are equal: the tag covers the first eight
/// bytes, so only the length and what follows them are left to compare.
///
/// Up to sixteen bytes the rest is compared as one more head, not through `memcmp`.
fn same_key_past_tag(stored: &str, key: &str) -> bool {
    let (stored, key) = (stored.as_bytes(), key.as_bytes());
    stored.len() == key.len()
        && match key.len() {
            0..=8 => true,
            9..=16 => head(&stored[8..]) == head(&key[8..]),
            _ => stored[8..] == key[8..],
        }
}

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// No fields, with room for `n`.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            tags: Vec::with_capacity(n),
            entries: Vec::with_capacity(n),
            present: 0,
            last_order: Cell::default(),
        }
    }

    /// Removes every field, keeping the room they took.
    pub fn clear(&mut self) {
        self.tags.clear();
        self.entries.clear();
        self.present = 0;
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.position_tagged(tag(key), key)
    }

    fn position_tagged(&self, tag: u64, key: &str) -> Option<usize> {
        if self.present & presence_bit(tag) == 0 {
            return None;
        }
        let mut from = 0;
        while let Some(i) = self.tags[from..].iter().position(|&t| t == tag) {
            let at = from + i;
            if same_key_past_tag(&self.entries[at].key, key) {
                return Some(at);
            }
            from = at + 1;
        }
        None
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.entries[i].value)
    }

    /// The value of `key`, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.position(key).map(|i| &mut self.entries[i].value)
    }

    /// Whether `key` is there (with any value, null included).
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    ///
    /// The name is made a [`FieldName`] only when the field is new. Pass a name built once
    /// (a step's, cloned) rather than a `&str` where it is known ahead: reading a name's words
    /// right after its bytes were copied in stalls the CPU (store forwarding fails), which
    /// made building names from `&str` 4.4 % of the processor (BENCHMARKS.md, "Field names
    /// built once").
    pub fn insert<K: AsRef<str> + Into<FieldName>>(
        &mut self,
        key: K,
        value: Value,
    ) -> Option<Value> {
        let tag = tag(key.as_ref());
        match self.position_tagged(tag, key.as_ref()) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].value, value)),
            None => {
                self.push(tag, key.into(), value);
                None
            }
        }
    }

    /// Sets `key` to `value` unless the record has `key` already; then hands both back.
    /// One scan where `contains_key` and `insert` would make two.
    pub fn insert_if_absent<K: AsRef<str> + Into<FieldName>>(
        &mut self,
        key: K,
        value: Value,
    ) -> Result<(), (K, Value)> {
        let tag = tag(key.as_ref());
        match self.position_tagged(tag, key.as_ref()) {
            Some(_) => Err((key, value)),
            None => {
                self.push(tag, key.into(), value);
                Ok(())
            }
        }
    }

    fn push(&mut self, tag: u64, key: FieldName, value: Value) {
        self.present |= presence_bit(tag);
        self.tags.push(tag);
        self.entries.push(Entry { key, value });
    }

    /// Takes `key` out; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key)?;
        self.tags.swap_remove(i);
        self.recount_present();
        Some(self.entries.swap_remove(i).value)
    }

    /// The presence bits again after a removal (another field may share the removed one's).
    fn recount_present(&mut self) {
        self.present = self
            .tags
            .iter()
            .fold(0, |bits, &tag| bits | presence_bit(tag));
    }

    /// Keeps the fields for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Value) -> bool) {
        let mut kept = 0;
        for i in 0..self.entries.len() {
            let entry = &mut self.entries[i];
            if keep(&entry.key, &mut entry.value) {
                self.entries.swap(kept, i);
                self.tags.swap(kept, i);
                kept += 1;
            }
        }
        self.entries.truncate(kept);
        self.tags.truncate(kept);
        self.recount_present();
    }

    /// The fields, in insertion order (a removal moves the last field into the gap).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|e| (e.key.as_str(), &e.value))
    }

    /// The fields with their values to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Value)> {
        self.entries
            .iter_mut()
            .map(|e| (e.key.as_str(), &mut e.value))
    }

    /// The fields in key order, left where they are: a record is written this way. The order
    /// is worked out on a list of indexes; moving the 56-byte fields themselves into it cost
    /// more than the comparisons (BENCHMARKS.md).
    pub fn iter_in_key_order(&self) -> impl Iterator<Item = (&str, &Value)> {
        let order = self.key_order();
        (0..self.entries.len()).map(move |i| {
            let entry = &self.entries[order.at(i)];
            (entry.key.as_str(), &entry.value)
        })
    }

    /// The fields' indexes in key order, worked out on a list of indexes (on the stack up to
    /// [`ORDER_ON_STACK_MAX`] fields).
    fn key_order(&self) -> KeyOrder {
        let n = self.tags.len();
        if n <= ORDER_ON_STACK_MAX {
            let mut order = self.start_from_last_order();
            insertion_sort(&mut order.order[..n], |a, b| {
                self.goes_before(usize::from(a), usize::from(b))
            });
            self.last_order.set(order);
            KeyOrder::Stack(order.order)
        } else {
            let mut order: Vec<usize> = (0..n).collect();
            insertion_sort(&mut order, |a, b| self.goes_before(a, b));
            KeyOrder::Heap(order)
        }
    }

    /// A permutation of this list's indexes to sort from: the last order's indexes that are
    /// still fields, in that order, then the indexes it did not have. At most
    /// [`ORDER_ON_STACK_MAX`] fields.
    fn start_from_last_order(&self) -> LastOrder {
        let last = self.last_order.get();
        let n = self.tags.len();
        let mut start = LastOrder::default();
        let mut filled = 0;
        for &i in &last.order[..usize::from(last.len)] {
            if usize::from(i) < n {
                start.order[filled] = i;
                filled += 1;
            }
        }
        for (slot, i) in start.order[filled..n].iter_mut().zip(last.len..) {
            *slot = i;
        }
        start.len = u8::try_from(n).expect("at most ORDER_ON_STACK_MAX fields");
        start
    }

    fn goes_before(&self, a: usize, b: usize) -> bool {
        match self.tags[a].cmp(&self.tags[b]) {
            Ordering::Equal => self.entries[a].key < self.entries[b].key,
            unequal => unequal == Ordering::Less,
        }
    }

    /// The fields as a JSON object (in key order).
    pub fn into_map(self) -> Map<String, Value> {
        self.entries
            .into_iter()
            .map(|e| (e.key.into_string(), e.value))
            .collect()
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Self {
        let mut fields = Self::with_capacity(map.len());
        for (key, value) in map {
            fields.push(tag(&key), key.into(), value);
        }
        fields
    }
}

impl PartialEq for Fields {
    /// The same fields with the same values, in whatever order.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl std::ops::Index<&str> for Fields {
    type Output = Value;

    /// The value of `key`, or null when absent (as indexing a JSON value gives).
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl Serialize for Fields {
    /// As a JSON object in key order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<&Entry> = self.entries.iter().collect();
        sorted.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut map = serializer.serialize_map(Some(sorted.len()))?;
        for entry in sorted {
            map.serialize_entry(&entry.key, &entry.value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #[test]
        fn keys_order_as_strings_do(a in "[a-c\\x00_]{0,12}", b in "[a-c\\x00_]{0,12}") {
            prop_assert_eq!(key_cmp(&a, &b), a.cmp(&b));
            prop_assert_eq!(key_cmp(&b, &a), b.cmp(&a));
        }
    }

    #[test]
    fn a_tag_is_the_first_eight_bytes_zero_padded_whatever_the_length() {
        let text = "abcdefghijklmnopqrstuvwxyz\u{e9}\u{1F600}";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let Some(key) = text.get(start..end) else {
                    continue;
                };
                let mut head = [0u8; 8];
                let n = key.len().min(8);
                head[..n].copy_from_slice(&key.as_bytes()[..n]);
                assert_eq!(tag(key), u64::from_be_bytes(head), "{key:?}");
            }
        }
    }

    #[test]
    fn keys_with_the_same_tag_are_the_same_key_only_when_every_byte_is() {
        for len in 9..=24 {
            let key = "k".repeat(len);
            assert!(same_key_past_tag(&key, &key.clone()));
            for at in 8..len {
                let mut other = key.clone().into_bytes();
                other[at] = b'j';
                let other = String::from_utf8(other).unwrap();
                assert_eq!(tag(&key), tag(&other));
                assert!(!same_key_past_tag(&key, &other), "{key} {other}");
            }
        }
        assert!(!same_key_past_tag("log_category", "log_categoryx"));
    }

    #[test]
    fn removed_and_dropped_fields_are_absent_and_the_rest_found_whatever_bits_they_share() {
        // 300 keys over 64 presence bits: every bit is shared many times over.
        let keys: Vec<String> = (0..300).map(|i| format!("field_{i}")).collect();
        let mut fields = Fields::new();
        for key in &keys {
            assert!(!fields.contains_key(key), "{key} before its insert");
            fields.insert(key.as_str(), Value::from(key.len()));
        }
        for key in keys.iter().skip(1).step_by(2) {
            assert!(fields.remove(key).is_some(), "{key} removed");
        }
        fields.retain(|key, _| !key.ends_with('0'));
        for (i, key) in keys.iter().enumerate() {
            let kept = i % 2 == 0 && !key.ends_with('0');
            assert_eq!(fields.contains_key(key), kept, "{key}");
        }
        fields.clear();
        assert!(keys.iter().all(|key| !fields.contains_key(key)));
        fields.insert("field_7", Value::Null);
        assert!(fields.contains_key("field_7"));
    }

    #[test]
    fn fields_behave_as_a_map_and_sort_into_key_order() {
        let mut fields = Fields::new();
        let keys = [
            "timestamp",
            "id",
            "a",
            "",
            "processed_at",
            "process",
            "log_level",
            "log_category",
            "abcdefgh",
            "abcdefghi",
            "abcdefgg",
            "a_name_longer_than_twenty_four_bytes",
        ];
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(fields.insert(*key, json!(i)), None);
        }
        assert_eq!(fields.insert("id", json!("x")), Some(json!(1)));
        assert_eq!(
            fields.insert_if_absent("abcdefghi", json!("kept out")),
            Err(("abcdefghi", json!("kept out")))
        );
        assert_eq!(fields.insert_if_absent("abcdefghk", json!(12)), Ok(()));
        assert_eq!(fields.remove("abcdefghk"), Some(json!(12)));
        assert_eq!(fields.get("abcdefghi"), Some(&json!(9)));
        assert_eq!(fields.get("abcdefgh"), Some(&json!(8)));
        assert_eq!(fields.get("abcdefghj"), None);
        assert!(fields.contains_key("") && !fields.contains_key("missing"));
        assert_eq!(fields.remove("a"), Some(json!(2)));
        assert_eq!(fields.remove("a"), None);
        *fields.get_mut("process").unwrap() = json!(true);
        fields.retain(|key, _| key != "timestamp");
        let map: Map<String, Value> = fields.clone().into_map();
        let order: Vec<&str> = fields.iter_in_key_order().map(|(k, _)| k).collect();
        let expected: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(order, expected, "sorted as a BTreeMap sorts");
        assert_eq!(
            serde_json::to_string(&fields).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(Fields::from(map), fields);
        assert_eq!(fields["missing"], Value::Null);
    }

    #[test]
    fn any_insertion_order_comes_out_in_key_order_short_or_long() {
        let keys: Vec<String> = (0..300)
            .map(|i| format!("k{:03}_{}", (i * 7919) % 300, i % 3))
            .collect();
        // One list for every record, as the processor reuses it: each sort starts from the
        // previous record's order, which had more fields, fewer, or others in its places.
        let mut fields = Fields::new();
        for n in [2, 3, 17, 64, 65, 300, 64, 17, 3, 2] {
            for rotate in [0, 1, n / 2] {
                fields.clear();
                let mut expected = Map::new();
                for (i, key) in keys[..n].iter().cycle().skip(rotate).take(n).enumerate() {
                    fields.insert(key.as_str(), json!(i));
                    expected.insert(key.clone(), json!(i));
                }
                assert_in_key_order(&fields, &expected, &format!("{n} rotated by {rotate}"));
                // A removal moves the last field into the gap.
                if let Some(first) = keys[..n].get(rotate) {
                    fields.remove(first);
                    expected.remove(first);
                    assert_in_key_order(&fields, &expected, &format!("{n}, one removed"));
                }
            }
        }
    }

    fn assert_in_key_order(fields: &Fields, expected: &Map<String, Value>, case: &str) {
        let in_order: Vec<(&str, &Value)> = fields.iter_in_key_order().collect();
        let wanted: Vec<(&str, &Value)> = expected.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(in_order, wanted, "{case}");
    }
}
