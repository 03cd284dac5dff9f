//! Record decoding: whatever a journal line holds, the forwarder's decoder and the collected
//! record type neither panic nor lose the raw bytes.
#![no_main]

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
    let _ = serde_json::from_slice::<CollectedRecord>(data);
});
