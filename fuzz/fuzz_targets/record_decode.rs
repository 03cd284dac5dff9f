//! Record decoding: whatever a journal line holds, the forwarder's decoder and the collected
//! record decoder (both format versions) neither panic nor lose the raw bytes, and a v2
//! record that decodes keeps its line's exact bytes. What the forwarder's decoder (sonic-rs)
//! takes as a record, serde_json takes as a JSON object with the same routing fields.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sidecar_core::record::CollectedRecord;
use sidecar_core::sink::OutRecord;

fuzz_target!(|data: &[u8]| {
    let record = OutRecord::decode(data);
    assert_eq!(record.raw, data);
    let _ = record.source_file();
    let _ = record.log_level();
    let _ = record.failed();
    let _ = record.fields();
    if record.is_decoded() {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(data).expect("a decoded record is a JSON object");
        let source_file = object.get("source_file").and_then(|v| v.as_str());
        assert_eq!(record.source_file(), source_file.unwrap_or("unknown"));
        let log_level = object.get("log_level").and_then(|v| v.as_str());
        assert_eq!(record.log_level(), log_level);
    }
    if let Ok(collected) = CollectedRecord::decode(data) {
        if data.first() == Some(&b'2') {
            let tab = data.iter().position(|&b| b == b'\t').expect("a v2 record has a tab");
            let exact = match &collected.line_base64 {
                Some(raw) => base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .expect("the decoder writes valid base64"),
                None => collected.line.as_bytes().to_vec(),
            };
            assert_eq!(exact, &data[tab + 1..]);
        }
    }
});
