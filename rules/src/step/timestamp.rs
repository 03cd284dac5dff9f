//! `timestamp:` a time in one of the given layouts becomes RFC 3339 UTC.

use serde_json::Value;
use sidecar_record::{FieldName, Fields};

use super::{Compile, Run};
use crate::spec::{OnMismatch, TimestampLayout, TimestampSpec};
use crate::timestamp::{self, Zone};
use crate::{present, push_error, RulesError};

#[derive(Debug)]
pub(super) struct Timestamp {
    field: FieldName,
    target: FieldName,
    layouts: Vec<TimestampLayout>,
    zone: Zone,
    keep_original: Option<FieldName>,
    on_mismatch: OnMismatch,
}

impl Timestamp {
    pub(super) fn compile(s: TimestampSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        if s.layouts.is_empty() {
            return Err(c.invalid("layouts", "must list at least one layout"));
        }
        let zone = match s.timezone.as_deref() {
            None => Zone::Utc,
            Some(text) => Zone::parse(text).map_err(|reason| c.invalid("timezone", reason))?,
        };
        let keep_original = s
            .keep_original
            .map(|name| c.field("keep_original", name))
            .transpose()?;
        Ok(Self {
            field: c.field("field", s.field)?,
            target: c.field("target", s.target)?,
            layouts: s.layouts,
            zone,
            keep_original,
            on_mismatch: s.on_mismatch,
        })
    }

    pub(super) fn apply(&self, run: &Run<'_>, record: &mut Fields) {
        let Self {
            field,
            target,
            layouts,
            zone,
            keep_original,
            on_mismatch,
        } = self;
        let Some(value) = present(record, field) else {
            return;
        };
        match timestamp::normalise(value, layouts, *zone) {
            Some(normalised) => {
                if let Some(keep) = keep_original {
                    let original = value.clone();
                    record.insert(keep.clone(), original);
                }
                record.insert(target.clone(), Value::String(normalised));
            }
            None if *on_mismatch == OnMismatch::Error => {
                let message = format!(
                    "{}: `{field}` ({value}) is in none of the layouts",
                    run.label
                );
                push_error(record, message);
            }
            None => {}
        }
    }
}
