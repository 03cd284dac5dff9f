//! Rule and config parsing: any text is either a rule set (which can then be applied) or a
//! clear error; the forwarder config likewise. Nothing panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sidecar_core::rules::RuleSet;
use sidecar_core::sink::ForwarderFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for rules in [
        RuleSet::from_yaml_str(text, "fuzz.yaml"),
        RuleSet::from_toml_str(text, "fuzz.toml"),
    ]
    .into_iter()
    .flatten()
    {
        let mut record = sidecar_core::record::Fields::new();
        record.insert("line", "2026-11-22 10:30:45,123 - application - INFO - x".into());
        rules.apply("access.log", &mut record);
    }
    let path = Path::new("forwarder.yaml");
    if let Ok(file) = sidecar_core::config::parse_text::<ForwarderFile>(text, path) {
        let _ = file.validate(path);
    }
});
