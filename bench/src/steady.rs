//! The steady-rate run (`--steady-rate`): the three stages at a pod's pace instead of flat
//! out. A writer thread appends demo-app lines to the four log files at a fixed rate, each
//! stamped with the wall clock in its asctime prefix; a reader thread follows the file sink's
//! output and takes, for every record, now minus the `timestamp` the processor parsed from that
//! prefix: the write→sink latency, to the millisecond. Per stage it prints the millicores
//! used after a warm-up, the peak RSS, and the peak of its anonymous part (heap and stacks,
//! without the binary's pages, which are shared page cache).
//!
//! Easy to get wrong: the clock. The stamp is wall-clock milliseconds, so latencies are
//! whole milliseconds (a line written at x.999 ms counts from x); the writer ticks every
//! millisecond, so it adds at most one more.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::generate::{LineMaker, FILES};
use crate::process::{Proc, Usage};
use crate::{processor_args, stop, wait_until, RunDirs, Setup};

/// Left out of the CPU figures and latencies: start-up, and the first files being found.
const WARMUP: Duration = Duration::from_secs(3);
/// How long the records written may take to all arrive once the writer stops.
const DRAIN: Duration = Duration::from_secs(30);
/// How often the reader looks at the sink's files.
const READ_EVERY: Duration = Duration::from_millis(2);

/// Runs the three stages on `rate` lines/s for `duration` (warm-up included) and prints what
/// they cost and how long lines took to reach the sink. With two `runs`, both pipelines run at
/// once, each with its own logs, journals and sink, and their costs are compared: the
/// difference between two pipelines that see the same machine at the same time is far steadier
/// than between two runs a minute apart.
///
/// # Errors
/// When a stage cannot start or dies, or the records do not all arrive.
pub fn run(runs: &[(&str, &Setup, &RunDirs)], rate: u64, duration: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        duration > WARMUP,
        "--steady-secs: must be more than the {} s warm-up",
        WARMUP.as_secs()
    );
    let measuring = Arc::new(AtomicBool::new(false));
    let mut procs = Vec::new();
    let mut pipelines = Vec::new();
    for (label, setup, dirs) in runs {
        procs.extend(spawn_stages(setup, dirs)?);
        pipelines.push(Pipeline {
            label,
            reader: SinkReader::start(&dirs.out, Arc::clone(&measuring)),
            writer: None,
        });
    }
    // The writers start together, after every stage is up.
    for (pipeline, (_, _, dirs)) in pipelines.iter_mut().zip(runs) {
        pipeline.writer = Some(Writer::start(&dirs.logs, rate)?);
    }
    let started = Instant::now();
    wait_until(&mut procs, WARMUP, "", || Ok(started.elapsed() >= WARMUP))?;
    let cpu_at_warmup: Vec<Option<f64>> = procs.iter().map(Proc::cpu_so_far_s).collect();
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    wait_until(&mut procs, duration, "", || {
        Ok(started.elapsed() >= duration)
    })?;
    let window_s = window.elapsed().as_secs_f64();
    let cpu_at_end: Vec<Option<f64>> = procs.iter().map(Proc::cpu_so_far_s).collect();
    measuring.store(false, Ordering::Relaxed);
    let mut written = Vec::new();
    for pipeline in &mut pipelines {
        let writer = pipeline
            .writer
            .take()
            .context("every pipeline has a writer")?;
        written.push(writer.finish()?);
    }
    wait_until(
        &mut procs,
        DRAIN,
        "every record written to reach the sink",
        || {
            Ok(pipelines
                .iter()
                .zip(&written)
                .all(|(p, &n)| p.reader.records.load(Ordering::Relaxed) >= n))
        },
    )?;
    let names: Vec<String> = procs.iter().map(|p| p.name.clone()).collect();
    let usages = stop(procs)?;

    println!(
        "steady: {rate} lines/s for {:.0} s over {} files ({} lines); measured after the first {:.0} s",
        duration.as_secs_f64(),
        FILES.len(),
        written[0],
        WARMUP.as_secs_f64()
    );
    let mut totals = Vec::new();
    for (i, (pipeline, written)) in pipelines.into_iter().zip(written).enumerate() {
        let stages = i * STAGES..(i + 1) * STAGES;
        let millicores: Vec<f64> = stages
            .clone()
            .map(|s| match (cpu_at_warmup[s], cpu_at_end[s]) {
                (Some(a), Some(b)) => (b - a) / window_s * 1000.0,
                _ => f64::NAN,
            })
            .collect();
        let (records, latencies) = pipeline.reader.finish();
        anyhow::ensure!(
            records == written,
            "{written} lines written, {records} records in the sink {}",
            pipeline.label
        );
        if !pipeline.label.is_empty() {
            println!("\n{}", pipeline.label);
        }
        totals.push(print_costs(
            &names[stages.clone()],
            &usages[stages],
            &millicores,
            latencies,
        )?);
    }
    if let [a, b] = totals[..] {
        println!(
            "\nall three, a {a:.1} millicores, b {b:.1}: b - a = {:+.1} %",
            100.0 * (b - a) / a
        );
    }
    println!("(millicores from /proc/<pid>/stat, 10 ms ticks, over the measured window)");
    Ok(())
}

/// Processes per pipeline: collector, processor, forwarder.
const STAGES: usize = 3;

/// One pipeline of a steady run: what reads its sink, and what writes its logs while it runs.
struct Pipeline<'a> {
    label: &'a str,
    reader: SinkReader,
    writer: Option<Writer>,
}

/// Starts the three stages on `dirs`, the forwarder's file sink never rolling a file.
fn spawn_stages(setup: &Setup, dirs: &RunDirs) -> anyhow::Result<Vec<Proc>> {
    fs::create_dir_all(&dirs.logs)?;
    let forwarder_args = crate::forwarder_args_with(
        setup,
        dirs,
        // No roll during the run, so the reader follows one plain file per source.
        "    max_file_bytes: 16GiB\n    compress_closed: false\n",
    )?;
    crate::spawn_three(
        setup,
        dirs,
        &processor_args(setup, dirs, None),
        &[],
        &forwarder_args,
        "",
    )
}

/// Prints one pipeline's stages (millicores, peak RSS) and its latencies; returns the three
/// stages' millicores together.
fn print_costs(
    names: &[String],
    usages: &[Usage],
    millicores: &[f64],
    mut latencies: Vec<u32>,
) -> anyhow::Result<f64> {
    println!(
        "{:<11} {:>11} {:>13} {:>14}",
        "stage", "millicores", "peak_rss_MiB", "peak_anon_MiB"
    );
    for ((name, usage), millicores) in names.iter().zip(usages).zip(millicores) {
        println!(
            "{:<11} {:>11.1} {:>13.1} {:>14.1}",
            name,
            millicores,
            usage.peak_rss_kib as f64 / 1024.0,
            usage.peak_anon_kib as f64 / 1024.0
        );
    }
    let total: f64 = millicores.iter().sum();
    println!("{:<11} {:>11.1}", "all three", total);
    anyhow::ensure!(!latencies.is_empty(), "no record arrived while measuring");
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "write→sink latency over {} records: p50 {} ms, p99 {} ms, max {} ms (whole ms; see --help)",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    );
    Ok(total)
}

/// Appends lines to the four log files at a fixed rate, stamped with the wall clock.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<u64>>,
}

impl Writer {
    fn start(logs: &Path, rate: u64) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        for (name, _) in FILES {
            let path = logs.join(name);
            files.push(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut maker = LineMaker::new(200);
            let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); files.len()];
            let mut line = String::new();
            let started = Instant::now();
            let mut written = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                let now_ms = wall_clock_ms();
                for seq in written..due {
                    let file = maker.make(seq, now_ms, &mut line);
                    buffers[file].extend_from_slice(line.as_bytes());
                }
                written = written.max(due);
                for (file, buffer) in files.iter_mut().zip(&mut buffers) {
                    if !buffer.is_empty() {
                        file.write_all(buffer)?;
                        buffer.clear();
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(written)
        });
        Ok(Self { stop, thread })
    }

    /// Stops writing; returns how many lines were written.
    fn finish(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
    }
}

/// Follows the file sink's files and takes each record's latency.
struct SinkReader {
    records: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u32>>,
}

impl SinkReader {
    fn start(out: &Path, measuring: Arc<AtomicBool>) -> Self {
        let records = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counted, stopped, out) = (Arc::clone(&records), Arc::clone(&stop), out.to_owned());
        let thread = std::thread::spawn(move || {
            let mut followed: Vec<Followed> = Vec::new();
            let mut latencies = Vec::new();
            let mut listed = Instant::now() - Duration::from_secs(1);
            while !stopped.load(Ordering::Relaxed) {
                if listed.elapsed() >= Duration::from_millis(100) {
                    listed = Instant::now();
                    follow_new_files(&out, &mut followed);
                }
                let now_ms = wall_clock_ms();
                let measure = measuring.load(Ordering::Relaxed);
                for file in &mut followed {
                    file.read_new(|record| {
                        counted.fetch_add(1, Ordering::Relaxed);
                        if let (true, Some(stamp)) = (measure, stamp_ms(record)) {
                            latencies.push(now_ms.saturating_sub(stamp) as u32);
                        }
                    });
                }
                std::thread::sleep(READ_EVERY);
            }
            latencies
        });
        Self {
            records,
            stop,
            thread,
        }
    }

    /// Stops following; returns the records seen and the latencies taken.
    fn finish(self) -> (u64, Vec<u32>) {
        self.stop.store(true, Ordering::Relaxed);
        let latencies = self.thread.join().unwrap_or_default();
        (self.records.load(Ordering::Relaxed), latencies)
    }
}

/// One sink file being followed.
struct Followed {
    path: PathBuf,
    file: File,
    partial: Vec<u8>,
}

impl Followed {
    /// Reads what was appended since the last call and hands over each complete record.
    fn read_new(&mut self, mut record: impl FnMut(&[u8])) {
        let mut chunk = [0u8; 64 << 10];
        loop {
            let n = self.file.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return;
            }
            self.partial.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &self.partial) {
                record(&self.partial[start..end]);
                start = end + 1;
            }
            self.partial.drain(..start);
        }
    }
}

fn follow_new_files(out: &Path, followed: &mut Vec<Followed>) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_sink_file = path.extension().is_some_and(|e| e == "ndjson");
        if is_sink_file && !followed.iter().any(|f| f.path == path) {
            if let Ok(file) = File::open(&path) {
                followed.push(Followed {
                    path,
                    file,
                    partial: Vec::new(),
                });
            }
        }
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The record's `timestamp` (`YYYY-MM-DD HH:MM:SS,mmm`, UTC), as ms since the epoch.
fn stamp_ms(record: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"timestamp\":\"";
    let at = memchr::memmem::find(record, KEY)? + KEY.len();
    let text = std::str::from_utf8(record.get(at..at + 23)?).ok()?;
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<u64>().ok();
    let days = days_from_civil(
        number(0..4)? as i64,
        number(5..7)? as u32,
        number(8..10)? as u32,
    );
    let seconds = number(11..13)? * 3600 + number(14..16)? * 60 + number(17..19)?;
    Some((days as u64 * 86_400 + seconds) * 1000 + number(20..23)?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`crate::generate::civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_stamp_is_read_back_to_the_millisecond() {
        let record = br#"{"json_timestamp":"x","timestamp":"2026-11-22 10:30:45,123","z":1}"#;
        assert_eq!(stamp_ms(record), Some(1_795_343_445_123));
        assert_eq!(stamp_ms(br#"{"timestamp":"soon"}"#), None);
        for days in [-1000, 0, 20_414, 60_000] {
            let (y, m, d) = crate::generate::civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
