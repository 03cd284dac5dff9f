//! The benchmark's input: demo-app-like log files in the Python-logging layouts the default
//! rules parse, `N` lines in total over the four files the demo apps write.
//!
//! Easy to get wrong: determinism. Every choice comes from one seeded PRNG and a synthetic
//! clock, never from the wall clock or a thread RNG, so two runs with the same flags write
//! byte-identical files and their numbers compare.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// The files, as the demo apps name them, and each one's share of the lines in percent.
pub const FILES: [(&str, u64); 4] = [
    ("access.log", 40),
    ("application.log", 25),
    ("database-queries.log", 20),
    ("job-execution.log", 15),
];

/// The first line's time: 2026-11-22 10:30:45,123 (UTC), as milliseconds since the epoch.
const START_MS: u64 = 1_795_343_445_123;
/// The seed: any constant will do, as long as it never changes between runs to compare.
const SEED: u64 = 0x5EED_1095;

/// What was written.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Lines per file, in the order of [`FILES`].
    pub lines: [u64; 4],
    /// Bytes over all files, newlines included.
    pub bytes: u64,
}

impl Generated {
    /// Lines over all files.
    pub fn total_lines(&self) -> u64 {
        self.lines.iter().sum()
    }
}

/// Writes `lines` lines of about `line_bytes` bytes each (newline included) into the four
/// files of [`FILES`] in `dir`, which must exist.
///
/// # Errors
/// When a file cannot be created or written.
pub fn generate(dir: &Path, lines: u64, line_bytes: usize) -> io::Result<Generated> {
    let mut writers = Vec::with_capacity(FILES.len());
    for (name, _) in FILES {
        writers.push(BufWriter::with_capacity(
            1 << 20,
            File::create(dir.join(name))?,
        ));
    }
    let mut maker = LineMaker::new(line_bytes);
    let mut generated = Generated {
        lines: [0; 4],
        bytes: 0,
    };
    let mut clock_ms = START_MS;
    let mut line = String::with_capacity(line_bytes * 2);
    for seq in 0..lines {
        clock_ms += maker.clock_step_ms();
        let file = maker.make(seq, clock_ms, &mut line);
        writers[file].write_all(line.as_bytes())?;
        generated.lines[file] += 1;
        generated.bytes += line.len() as u64;
    }
    for mut writer in writers {
        writer.flush()?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
    }
    Ok(generated)
}

/// Writes `lines` lines of the same kinds round-robin into `files` files named
/// `app-0000.log`, `app-0001.log`, … in `dir` (the many-files run); returns the bytes written.
///
/// # Errors
/// When a file cannot be created or written.
pub fn generate_spread(
    dir: &Path,
    lines: u64,
    line_bytes: usize,
    files: usize,
    layout: Layout,
    cri: bool,
) -> io::Result<u64> {
    let mut writers = Vec::with_capacity(files);
    for i in 0..files {
        let path = layout.path_of(dir, i);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        writers.push(BufWriter::with_capacity(16 << 10, File::create(path)?));
    }
    let mut maker = LineMaker::new(line_bytes);
    let mut clock_ms = START_MS;
    let mut line = String::with_capacity(line_bytes * 2);
    let mut bytes = 0;
    for seq in 0..lines {
        clock_ms += maker.clock_step_ms();
        maker.make(seq, clock_ms, &mut line);
        let writer = &mut writers[seq as usize % files];
        if cri {
            let header = cri_header(clock_ms);
            writer.write_all(header.as_bytes())?;
            bytes += header.len() as u64;
        }
        writer.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    for mut writer in writers {
        writer.flush()?;
    }
    Ok(bytes)
}

/// What containerd writes before a whole stdout line: `<RFC 3339 nano time> stdout F `.
fn cri_header(clock_ms: u64) -> String {
    let mut stamp = String::with_capacity(32);
    write_timestamp(&mut stamp, clock_ms);
    // `2026-11-22 10:30:45,123` → `2026-11-22T10:30:45.123000000Z`
    format!(
        "{}000000Z stdout F ",
        stamp.replacen(' ', "T", 1).replacen(',', ".", 1)
    )
}

/// How the files of a spread run are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `app-0000.log`, `app-0001.log`, … in one directory.
    Flat,
    /// `ns_app-0000_<uid>/app/0.log`, …: a directory per file, as the kubelet's tree.
    KubeletTree,
}

impl Layout {
    fn path_of(self, dir: &Path, i: usize) -> std::path::PathBuf {
        match self {
            Layout::Flat => dir.join(format!("app-{i:04}.log")),
            Layout::KubeletTree => dir
                .join(format!(
                    "bench_app-{i:04}_{i:08x}-0000-4000-8000-000000000000"
                ))
                .join("app")
                .join("0.log"),
        }
    }

    /// The `--watch` glob below the directory that finds the files.
    pub fn watch_glob(self) -> &'static str {
        match self {
            Layout::Flat => "*.log",
            Layout::KubeletTree => "*/*/*.log",
        }
    }
}

/// Makes the lines, one at a time: which file each goes to and its text.
pub struct LineMaker {
    rng: SplitMix64,
    line_bytes: usize,
}

impl LineMaker {
    /// Lines of about `line_bytes` bytes each, newline included, from the fixed seed.
    pub fn new(line_bytes: usize) -> Self {
        Self {
            rng: SplitMix64(SEED),
            line_bytes,
        }
    }

    /// How far the synthetic clock moves before the next line: 0 to 2 ms.
    pub fn clock_step_ms(&mut self) -> u64 {
        self.rng.below(3)
    }

    /// Writes line `seq`, stamped `clock_ms` (ms since the epoch), into `line` (cleared
    /// first, newline included); returns the index in [`FILES`] of the file it goes to.
    pub fn make(&mut self, seq: u64, clock_ms: u64, line: &mut String) -> usize {
        let rng = &mut self.rng;
        let file = pick_file(rng.below(100));
        line.clear();
        write_timestamp(line, clock_ms);
        line.push_str(" - ");
        let target = self.line_bytes.saturating_sub(1) * (80 + rng.below(41) as usize) / 100;
        match file {
            0 => access(line, rng, seq, target),
            1 => application(line, rng, target),
            2 => database(line, rng, seq, target),
            _ => job(line, rng, seq, target),
        }
        line.push('\n');
        file
    }
}

fn pick_file(percent: u64) -> usize {
    let mut upto = 0;
    for (i, (_, share)) in FILES.iter().enumerate() {
        upto += share;
        if percent < upto {
            return i;
        }
    }
    FILES.len() - 1
}

/// The web-api's access log: one JSON object per request and per response.
fn access(line: &mut String, rng: &mut SplitMix64, seq: u64, target: usize) {
    const PATHS: [&str; 6] = [
        "/users",
        "/users?page=2",
        "/users?page=3&limit=20",
        "/users/{id}",
        "/health",
        "/orders/{id}",
    ];
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "DELETE"];
    let method = METHODS[rng.below(4) as usize];
    let path = PATHS[rng.below(6) as usize].replace("{id}", &rng.below(1000).to_string());
    let request_id = rng.below(1 << 32);
    if rng.below(100) < 45 {
        let _ = write!(
            line,
            r#"{{"type":"request","method":"{method}","path":"{path}","remote_addr":"10.0.{}.{}","user_agent":"traffic-generator/1.0","request_id":"req-{request_id:08x}","seq":{seq}"#,
            rng.below(8),
            rng.below(250) + 2,
        );
    } else {
        let status = match rng.below(100) {
            0..80 => 200,
            80..85 => 201,
            85..92 => 404,
            92..96 => 400,
            _ => 500,
        };
        let _ = write!(
            line,
            r#"{{"type":"response","method":"{method}","path":"{path}","status_code":{status},"content_length":{},"processing_time_ms":{}.{},"request_id":"req-{request_id:08x}","seq":{seq}"#,
            rng.below(4096) + 16,
            rng.below(250),
            rng.below(10),
        );
    }
    close_json(line, rng, target);
}

/// The application log, in the text layout `logger - LEVEL - message`.
fn application(line: &mut String, rng: &mut SplitMix64, target: usize) {
    const LOGGERS: [&str; 4] = ["application", "web-api", "auth", "cache"];
    let logger = LOGGERS[rng.below(4) as usize];
    let id = rng.below(10_000);
    let ms = rng.below(3000);
    let (level, message) = match rng.below(100) {
        0..35 => (
            "INFO",
            format!(
                "Request req-{:08x} completed in {ms} ms",
                rng.below(1 << 32)
            ),
        ),
        35..55 => ("INFO", format!("Cache miss for key user:{id}")),
        55..70 => (
            "INFO",
            format!(
                "User {id} logged in from 10.0.{}.{}",
                rng.below(8),
                rng.below(250)
            ),
        ),
        70..80 => (
            "WARNING",
            format!("Slow response for GET /users/{id}: {ms} ms"),
        ),
        80..85 => (
            "WARNING",
            format!("Deprecated API version used by client {id}"),
        ),
        85..90 => ("ERROR", format!("User {id} not found")),
        90..95 => (
            "ERROR",
            format!("Failed to send email to user_{id}@example.com: connection refused"),
        ),
        _ => ("DEBUG", format!("Session {id} refreshed, ttl {ms} s")),
    };
    let _ = write!(line, "{logger} - {level} - {message}");
    pad(line, rng, target, " | ");
}

/// The db-client's query log: query_completed or query_failed.
fn database(line: &mut String, rng: &mut SplitMix64, seq: u64, target: usize) {
    const TABLES: [&str; 4] = ["users", "orders", "products", "transactions"];
    let table = TABLES[rng.below(4) as usize];
    let id = rng.below(100_000);
    let (operation, query) = match rng.below(10) {
        0..6 => ("SELECT", format!("SELECT * FROM {table} WHERE id = {id}")),
        6..8 => (
            "UPDATE",
            format!("UPDATE {table} SET updated_at = NOW() WHERE id = {id}"),
        ),
        8 => ("INSERT", format!("INSERT INTO {table} (id) VALUES ({id})")),
        _ => ("DELETE", format!("DELETE FROM {table} WHERE id = {id}")),
    };
    let time_ms = match rng.below(100) {
        0..90 => rng.below(1000),
        90..98 => 1000 + rng.below(4000),
        _ => 5000 + rng.below(5000),
    };
    let query_id = rng.below(1 << 32);
    let connection = rng.below(10) + 1;
    if rng.below(100) < 8 {
        let _ = write!(
            line,
            r#"{{"event":"query_failed","query_id":"q-{query_id:08x}","operation":"{operation}","table":"{table}","query":"{query}","execution_time_ms":{}.{},"error":"deadlock detected","connection_id":{connection},"seq":{seq}"#,
            time_ms / 10,
            time_ms % 10,
        );
    } else {
        let _ = write!(
            line,
            r#"{{"event":"query_completed","query_id":"q-{query_id:08x}","operation":"{operation}","table":"{table}","query":"{query}","execution_time_ms":{}.{},"rows_affected":{},"connection_id":{connection},"seq":{seq}"#,
            time_ms / 10,
            time_ms % 10,
            rng.below(100),
        );
    }
    close_json(line, rng, target);
}

/// The worker's job log: job_started, job_completed or job_failed.
fn job(line: &mut String, rng: &mut SplitMix64, seq: u64, target: usize) {
    const TYPES: [&str; 4] = [
        "send_email",
        "generate_report",
        "process_payment",
        "cleanup",
    ];
    let job_type = TYPES[rng.below(4) as usize];
    let job_id = rng.below(1 << 32);
    let worker = rng.below(4) + 1;
    let (event, status) = match rng.below(100) {
        0..45 => ("job_started", "running"),
        45..92 => ("job_completed", "completed"),
        _ => ("job_failed", "failed"),
    };
    let _ = write!(
        line,
        r#"{{"event":"{event}","job_id":"job-{job_id:08x}","job_type":"{job_type}","worker_id":{worker},"status":"{status}","duration_ms":{},"attempt":{},"seq":{seq}"#,
        rng.below(60_000),
        rng.below(3) + 1,
    );
    close_json(line, rng, target);
}

/// Pads a JSON object (still open) with a `detail` field up to `target`, then closes it.
fn close_json(line: &mut String, rng: &mut SplitMix64, target: usize) {
    const FIELD: &str = r#","detail":""#;
    if line.len() + FIELD.len() + 2 < target {
        line.push_str(FIELD);
        pad(line, rng, target - 2, "");
        line.push('"');
    }
    line.push('}');
}

/// Appends `separator` and words until the line is about `target` bytes long.
fn pad(line: &mut String, rng: &mut SplitMix64, target: usize, separator: &str) {
    const WORDS: [&str; 12] = [
        "lorem", "ipsum", "dolor", "sit", "amet", "tenant", "region", "shard", "retry", "upstream",
        "cache", "session",
    ];
    if line.len() + separator.len() >= target {
        return;
    }
    line.push_str(separator);
    let start = line.len();
    while line.len() < target {
        if line.len() > start {
            line.push(' ');
        }
        line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
}

/// `YYYY-MM-DD HH:MM:SS,mmm` (UTC) for `ms` since the epoch: the asctime layout.
fn write_timestamp(out: &mut String, ms: u64) {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02},{millis:03}",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    );
}

/// Year, month, day of the proleptic Gregorian calendar for a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// SplitMix64: tiny, fast and good enough to vary log lines; not for anything secret.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_the_documented_one() {
        let mut s = String::new();
        write_timestamp(&mut s, START_MS);
        assert_eq!(s, "2026-11-22 10:30:45,123");
    }

    #[test]
    fn generation_is_deterministic_and_sized() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ga = generate(a.path(), 10_000, 200).unwrap();
        let gb = generate(b.path(), 10_000, 200).unwrap();
        assert_eq!(ga.total_lines(), 10_000);
        assert_eq!(ga.lines, gb.lines);
        for (name, _) in FILES {
            let (fa, fb) = (
                std::fs::read(a.path().join(name)).unwrap(),
                std::fs::read(b.path().join(name)).unwrap(),
            );
            assert_eq!(fa, fb, "{name}");
        }
        let mean = ga.bytes / 10_000;
        assert!((180..=230).contains(&mean), "mean line length {mean}");
        let access = std::fs::read_to_string(a.path().join("access.log")).unwrap();
        let first = access.lines().next().unwrap();
        let (_, json) = first.split_once(" - ").unwrap();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert!(
            value["type"] == "request" || value["type"] == "response",
            "{first}"
        );
    }
}
