//! Pod metadata from the Downward API, without any access to the Kubernetes API: the
//! environment (`POD_NAME`, `POD_NAMESPACE`, `NODE_NAME`, `POD_IP`, `POD_SERVICE_ACCOUNT`) and
//! a downwardAPI volume's `labels` and `annotations` files.
//!
//! Easy to get wrong: the volume files' format. The kubelet writes one `key="value"` per line
//! with the value quoted the way Go's `strconv.Quote` does, so quotes, backslashes and
//! non-ASCII text arrive escaped and are unescaped here.

use std::path::Path;

use serde_json::{Map, Value};
use tracing::warn;

use sidecar_common::mounted::FileWatch;

/// Environment variables read, with the key each gets in the object.
const ENV: [(&str, &str); 5] = [
    ("POD_NAME", "pod_name"),
    ("POD_NAMESPACE", "namespace"),
    ("NODE_NAME", "node_name"),
    ("POD_IP", "pod_ip"),
    ("POD_SERVICE_ACCOUNT", "service_account"),
];

/// The downwardAPI volume's files, watched for the kubelet's updates.
#[derive(Debug)]
pub struct DownwardVolume {
    labels: FileWatch,
    annotations: FileWatch,
}

impl DownwardVolume {
    /// The `labels` and `annotations` files in `podinfo_dir` (either may be missing).
    pub fn new(podinfo_dir: &Path) -> DownwardVolume {
        DownwardVolume {
            labels: FileWatch::new(&podinfo_dir.join("labels")),
            annotations: FileWatch::new(&podinfo_dir.join("annotations")),
        }
    }

    /// Whether the kubelet updated either file since the last look.
    pub fn changed(&mut self) -> bool {
        // Both are checked, so each watch takes in its new version.
        let labels = self.labels.changed();
        let annotations = self.annotations.changed();
        labels || annotations
    }

    /// `labels` and `annotations` as objects, each left out when its file is missing.
    pub fn read(&self) -> Map<String, Value> {
        let mut object = Map::new();
        for (key, watch) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            if let Some(map) = read_pairs(watch.path()) {
                object.insert(key.to_owned(), Value::Object(map));
            }
        }
        object
    }
}

/// The pod's identity from the environment the Downward API sets; unset or empty variables
/// are left out.
pub fn environment() -> Map<String, Value> {
    let mut object = Map::new();
    for (var, key) in ENV {
        if let Ok(value) = std::env::var(var) {
            if !value.is_empty() {
                object.insert(key.to_owned(), Value::String(value));
            }
        }
    }
    object
}

/// A downwardAPI `key="value"` file; `None` when it does not exist.
fn read_pairs(path: &Path) -> Option<Map<String, Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Cannot read a downwardAPI file; its pod metadata is left out.");
            return None;
        }
    };
    let mut map = Map::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Some((key, quoted)) = line.split_once('=') else {
            continue;
        };
        map.insert(key.trim().to_owned(), Value::String(unquote(quoted.trim())));
    }
    Some(map)
}

/// Undoes Go's `strconv.Quote`: `\"`, `\\`, `\n`, `\t`, `\r`, `\xNN`, `\uNNNN`, `\UNNNNNNNN`.
fn unquote(quoted: &str) -> String {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(quoted);
    let mut out = String::with_capacity(inner.len());
    let mut bytes = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush_bytes(&mut bytes, &mut out);
            out.push(c);
            continue;
        }
        let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Option<u32> {
            let digits: String = chars.by_ref().take(n).collect();
            u32::from_str_radix(&digits, 16).ok()
        };
        match chars.next() {
            // \xNN is one byte of a UTF-8 sequence Go could not print.
            Some('x') => {
                if let Some(byte) = hex(&mut chars, 2) {
                    bytes.push(byte as u8);
                }
                continue;
            }
            Some('u') => push_code(hex(&mut chars, 4), &mut bytes, &mut out),
            Some('U') => push_code(hex(&mut chars, 8), &mut bytes, &mut out),
            Some('n') => push_char('\n', &mut bytes, &mut out),
            Some('t') => push_char('\t', &mut bytes, &mut out),
            Some('r') => push_char('\r', &mut bytes, &mut out),
            Some(other) => push_char(other, &mut bytes, &mut out),
            None => {}
        }
    }
    flush_bytes(&mut bytes, &mut out);
    out
}

fn push_code(code: Option<u32>, bytes: &mut Vec<u8>, out: &mut String) {
    if let Some(c) = code.and_then(char::from_u32) {
        push_char(c, bytes, out);
    }
}

fn push_char(c: char, bytes: &mut Vec<u8>, out: &mut String) {
    flush_bytes(bytes, out);
    out.push(c);
}

fn flush_bytes(bytes: &mut Vec<u8>, out: &mut String) {
    if !bytes.is_empty() {
        out.push_str(&String::from_utf8_lossy(bytes));
        bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quoted_values_are_unquoted() {
        assert_eq!(unquote(r#""plain""#), "plain");
        assert_eq!(unquote(r#""a \"b\" \\ c\nd""#), "a \"b\" \\ c\nd");
        assert_eq!(unquote(r#""caf\u00e9 \xc3\xa9""#), "café é");
    }

    #[test]
    fn labels_and_annotations_files_become_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("labels"),
            "app.kubernetes.io/name=\"logging-demo\"\npod-template-hash=\"7c9d\"\n",
        )
        .unwrap();
        let object = DownwardVolume::new(dir.path()).read();
        assert_eq!(
            object["labels"],
            serde_json::json!({"app.kubernetes.io/name": "logging-demo", "pod-template-hash": "7c9d"})
        );
        assert!(object.get("annotations").is_none());
    }
}
