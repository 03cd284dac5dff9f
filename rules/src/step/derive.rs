//! `derive:` a field's value chosen by the first case whose condition holds.

use serde_json::Value;
use sidecar_record::{FieldName, Fields};

use super::Compile;
use crate::condition::Condition;
use crate::spec::DeriveSpec;
use crate::{present, RulesError};

#[derive(Debug)]
pub(super) struct Derive {
    field: FieldName,
    cases: Vec<(Condition, Value)>,
    default: Option<Value>,
    only_if_missing: bool,
}

impl Derive {
    pub(super) fn compile(s: DeriveSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let field = c.field("field", s.field)?;
        let from = s.from.map(|from| c.field("from", from)).transpose()?;
        if s.cases.is_empty() {
            return Err(c.invalid("cases", "must list at least one case"));
        }
        let cases = s
            .cases
            .into_iter()
            .enumerate()
            .map(|(i, case)| {
                let condition = Condition::compile(
                    case.when,
                    from.as_deref(),
                    c.scope,
                    &c.at(&format!("cases[{i}].when")),
                    "set `from` on the derive step or `field` in this condition",
                )?;
                Ok((condition, case.value))
            })
            .collect::<Result<Vec<_>, RulesError>>()?;
        Ok(Self {
            field,
            cases,
            default: s.default,
            only_if_missing: s.only_if_missing,
        })
    }

    pub(super) fn apply(&self, record: &mut Fields) {
        if self.only_if_missing && present(record, &self.field).is_some() {
            return;
        }
        let chosen = self
            .cases
            .iter()
            .find(|(condition, _)| condition.holds(record))
            .map(|(_, value)| value)
            .or(self.default.as_ref());
        if let Some(value) = chosen {
            record.insert(self.field.clone(), value.clone());
        }
    }
}
