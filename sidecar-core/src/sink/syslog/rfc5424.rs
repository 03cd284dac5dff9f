//! RFC 5424 messages: the header fields, structured data and MSG of one record, and the
//! checks the configured header values must pass. Apart from the sink, which only moves the
//! bytes.

use std::borrow::Cow;
use std::io::Write as _;

use serde::Deserialize;

use super::{Body, Facility, Severity, SyslogSpec, NIL};
use crate::record::string_or_absent;
use crate::sink::OutRecord;

/// A configured header field must already be what RFC 5424 §6 allows: 1 to `max` printable
/// US-ASCII characters (33–126).
pub(super) fn check_header_field(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if let Some(c) = value.chars().find(|c| !('!'..='~').contains(c)) {
        return Err(format!(
            "{c:?} is not allowed (printable ASCII without spaces only)"
        ));
    }
    Ok(())
}

/// SD-NAME (RFC 5424 §6.3.2): 1–32 printable US-ASCII characters except `=`, space, `]`, `"`.
pub(super) fn check_sd_name(value: &str) -> Result<(), String> {
    check_header_field(value, 32)?;
    if let Some(c) = value.chars().find(|c| matches!(c, '=' | ']' | '"')) {
        return Err(format!("{c:?} is not allowed in an SD-ID"));
    }
    Ok(())
}

/// Appends `value` as a header field: characters outside printable ASCII become `_`, at most
/// `max` bytes, NILVALUE when empty.
pub(super) fn push_header_field(out: &mut Vec<u8>, value: &str, max: usize) {
    let start = out.len();
    out.extend(
        value
            .bytes()
            .take(max)
            .map(|b| if (33..=126).contains(&b) { b } else { b'_' }),
    );
    if out.len() == start {
        out.extend_from_slice(NIL.as_bytes());
    }
}

/// Appends `value` as a PARAM-VALUE: `"`, `\` and `]` escaped with a backslash
/// (RFC 5424 §6.3.3).
pub(super) fn push_param_value(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// An RFC 3339 time RFC 5424 §6.2.3 accepts (upper-case `T` and `Z`, at most 6 fractional
/// digits), checked cheaply: the collector writes `2026-11-22T19:42:24.948Z`.
pub(super) fn is_syslog_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b.len() <= 32
        && b[4] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && (b[b.len() - 1] == b'Z' || b[b.len() - 6] == b'+' || b[b.len() - 6] == b'-')
        && b.iter()
            .all(|c| c.is_ascii_digit() || b"-T:.Z+".contains(c))
        && t.split_once('.')
            .is_none_or(|(_, frac)| frac.bytes().take_while(u8::is_ascii_digit).count() <= 6)
}

/// The fields a message is made of, borrowed from the record; the rest is skipped. A field
/// that is not a string (an app's JSON `message` may be an object) counts as absent, so it
/// cannot make the record lose its id.
#[derive(Debug, Default, Deserialize)]
pub(super) struct MessageFields<'a> {
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    collected_at: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    log_category: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    line: Option<Cow<'a, str>>,
}

/// Formats records as RFC 5424 messages.
#[derive(Debug, Clone)]
pub(super) struct Formatter {
    facility: Facility,
    default_severity: Severity,
    hostname: String,
    app_name: Option<String>,
    proc_id: String,
    msg_id: Option<String>,
    sd_id: String,
    body: Body,
    pub(super) max_message_bytes: usize,
}

impl Formatter {
    pub(super) fn new(spec: &SyslogSpec) -> Self {
        Self {
            facility: spec.facility,
            default_severity: spec.default_severity,
            hostname: spec.hostname.clone().unwrap_or_else(default_hostname),
            app_name: spec.app_name.clone(),
            proc_id: spec.proc_id.clone().unwrap_or_else(|| NIL.into()),
            msg_id: spec.msg_id.clone(),
            sd_id: spec.sd_id.clone(),
            body: spec.body,
            max_message_bytes: usize::try_from(spec.max_message_bytes()).unwrap_or(usize::MAX),
        }
    }

    /// Appends one message for `record` to `out`; returns whether MSG was cut to fit.
    pub(super) fn format(&self, out: &mut Vec<u8>, record: &OutRecord<'_>) -> bool {
        let start = out.len();
        let fields: MessageFields<'_> = if record.is_decoded() {
            serde_json::from_slice(record.raw).unwrap_or_default()
        } else {
            MessageFields::default()
        };
        let severity = record
            .log_level()
            .and_then(Severity::from_level)
            .unwrap_or(self.default_severity);
        let pri = self.facility as u8 * 8 + severity as u8;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "<{pri}>1 ");
        match fields.collected_at.as_deref() {
            Some(t) if is_syslog_timestamp(t) => out.extend_from_slice(t.as_bytes()),
            _ => out.extend_from_slice(NIL.as_bytes()),
        }
        out.push(b' ');
        push_header_field(out, &self.hostname, 255);
        out.push(b' ');
        match &self.app_name {
            Some(name) => push_header_field(out, name, 48),
            None if record.is_decoded() => {
                let source = record.source_file();
                push_header_field(out, source.strip_suffix(".log").unwrap_or(source), 48);
            }
            None => out.extend_from_slice(NIL.as_bytes()),
        }
        out.push(b' ');
        push_header_field(out, &self.proc_id, 128);
        out.push(b' ');
        match (&self.msg_id, fields.log_category.as_deref()) {
            (Some(id), _) => push_header_field(out, id, 32),
            (None, Some(category)) => push_header_field(out, category, 32),
            (None, None) => out.extend_from_slice(NIL.as_bytes()),
        }
        out.push(b' ');
        self.push_structured_data(out, record, &fields);
        let body: &[u8] = match self.body {
            Body::Message => match (&fields.message, &fields.line) {
                (Some(m), _) => m.as_bytes(),
                (None, Some(l)) => l.as_bytes(),
                (None, None) => record.raw,
            },
            Body::Record => record.raw,
        };
        if !body.is_empty() {
            out.push(b' ');
            let room = self.max_message_bytes.saturating_sub(out.len() - start);
            let cut = utf8_prefix_len(body, room);
            out.extend_from_slice(&body[..cut]);
            return cut < body.len();
        }
        false
    }

    fn push_structured_data(
        &self,
        out: &mut Vec<u8>,
        record: &OutRecord<'_>,
        fields: &MessageFields<'_>,
    ) {
        if !record.is_decoded() {
            out.extend_from_slice(NIL.as_bytes());
            return;
        }
        out.push(b'[');
        out.extend_from_slice(self.sd_id.as_bytes());
        let params = [
            ("id", fields.id.as_deref()),
            ("source", Some(record.source_file())),
            ("level", record.log_level()),
        ];
        for (name, value) in params {
            if let Some(value) = value {
                let _ = write!(out, " {name}=\"");
                push_param_value(out, value);
                out.push(b'"');
            }
        }
        out.push(b']');
    }
}

/// The longest prefix of `bytes` of at most `max` bytes that does not split a UTF-8 character.
pub(super) fn utf8_prefix_len(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut cut = max;
    // Continuation bytes are 0b10xx_xxxx: step back to the start of the character.
    while cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    cut
}

/// `$HOSTNAME` (the pod's name in Kubernetes), else the kernel's host name.
pub(super) fn default_hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| NIL.into())
}
