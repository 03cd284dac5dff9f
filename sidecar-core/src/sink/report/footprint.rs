//! What each sidecar costs the pod, for the report: CPU (millicores over the report's
//! interval) and resident memory. The forwarder reads its own from `/proc/self`; the collector
//! and processor are in other containers of the same pod, so their `/metrics` (the standard
//! `process_*` metrics, on the pod's loopback) are scraped.
//!
//! Easy to get wrong: the delivery loop. A sidecar that is down or slow must not hold up the
//! report, let alone delivery: scrapes run on a thread of their own, with a short timeout, and
//! the report shows the last answers it has.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::telemetry;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// One sidecar's usage at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Usage {
    at: Instant,
    cpu_s: f64,
    rss_bytes: f64,
}

/// The last scrape of one sidecar.
#[derive(Debug, Clone)]
enum Sample {
    Usage(Usage),
    Unreachable(String),
}

/// Samples by sidecar name, the forwarder's own included.
type Samples = Arc<Mutex<BTreeMap<String, Sample>>>;

/// The footprint line of the report, fed by a scraping thread.
pub struct Footprint {
    samples: Samples,
    /// What the previous report showed, to take CPU differences from.
    previous: BTreeMap<String, Usage>,
    stop: Option<mpsc::Sender<()>>,
    scraper: Option<JoinHandle<()>>,
}

impl Footprint {
    /// Scrapes `sidecars` (name → `/metrics` URL) every `every`, and the forwarder itself.
    pub fn start(sidecars: BTreeMap<String, String>, every: Duration) -> Self {
        let samples = Samples::default();
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = Arc::clone(&samples);
        let scraper = std::thread::Builder::new()
            .name("report-footprint".into())
            .spawn(move || scrape_until_stopped(&sidecars, &shared, every, &stopped))
            .ok();
        Self {
            samples,
            previous: BTreeMap::new(),
            stop: Some(stop),
            scraper,
        }
    }

    /// `sidecars: collector 12.0 millicores 6.8 MiB, …`, CPU over the time since the last
    /// call (the first call shows the CPU seconds used since each one started).
    pub fn line(&mut self) -> String {
        let mut samples = self.samples.lock().clone();
        if let Some(own) = own_usage() {
            samples.insert("forwarder".into(), Sample::Usage(own));
        }
        let parts: Vec<String> = samples
            .into_iter()
            .map(|(name, sample)| match sample {
                Sample::Usage(now) => {
                    let cpu = match self.previous.insert(name.clone(), now) {
                        Some(before) if now.at > before.at => format!(
                            "{:.1} millicores",
                            (now.cpu_s - before.cpu_s).max(0.0)
                                / (now.at - before.at).as_secs_f64()
                                * 1000.0
                        ),
                        _ => format!("{:.2} CPU-s so far", now.cpu_s),
                    };
                    format!("{name} {cpu} {:.1} MiB", now.rss_bytes / 1_048_576.0)
                }
                Sample::Unreachable(why) => format!("{name} unknown ({why})"),
            })
            .collect();
        format!("sidecars: {}", parts.join(", "))
    }
}

impl Drop for Footprint {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(scraper) = self.scraper.take() {
            let _ = scraper.join();
        }
    }
}

fn own_usage() -> Option<Usage> {
    let (cpu_s, rss_bytes) = telemetry::own_usage()?;
    Some(Usage {
        at: Instant::now(),
        cpu_s,
        rss_bytes,
    })
}

fn scrape_until_stopped(
    sidecars: &BTreeMap<String, String>,
    samples: &Samples,
    every: Duration,
    stopped: &mpsc::Receiver<()>,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let Ok(client) = reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build() else {
        return;
    };
    loop {
        for (name, url) in sidecars {
            let sample = runtime.block_on(scrape(&client, url));
            samples.lock().insert(name.clone(), sample);
        }
        // The sender is dropped at shutdown: that ends the wait at once.
        if !matches!(
            stopped.recv_timeout(every),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            return;
        }
    }
}

async fn scrape(client: &reqwest::Client, url: &str) -> Sample {
    let text = match client.get(url).send().await {
        Ok(response) if response.status().is_success() => response.text().await,
        Ok(response) => {
            return Sample::Unreachable(format!("{url} answered {}", response.status()))
        }
        Err(e) => Err(e),
    };
    match text {
        Ok(text) => match usage_in(&text) {
            Some(usage) => Sample::Usage(usage),
            None => Sample::Unreachable(format!("{url} has no process metrics")),
        },
        Err(e) => Sample::Unreachable(format!("{url}: {}", root_cause(&e))),
    }
}

/// The innermost cause of an error: "Connection refused (os error 111)", not "error sending
/// request".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// The process metrics in a `/metrics` answer (either text format).
fn usage_in(text: &str) -> Option<Usage> {
    let value = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Some(Usage {
        at: Instant::now(),
        cpu_s: value("process_cpu_seconds_total")?,
        rss_bytes: value("process_resident_memory_bytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_a_metrics_answer() {
        let text = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\nprocess_resident_memory_bytes 7340032\n";
        let usage = usage_in(text).unwrap();
        assert_eq!((usage.cpu_s, usage.rss_bytes), (1.5, 7_340_032.0));
        assert!(usage_in("up 1\n").is_none());
    }

    #[test]
    fn cpu_is_shown_as_millicores_between_two_reports() {
        let mut footprint = Footprint::start(BTreeMap::new(), Duration::from_secs(3600));
        let t0 = Instant::now();
        let scraped = |at, cpu_s, rss_mib: f64| {
            let usage = Usage {
                at,
                cpu_s,
                rss_bytes: rss_mib * 1_048_576.0,
            };
            (String::from("collector"), Sample::Usage(usage))
        };
        footprint.samples.lock().extend([scraped(t0, 1.0, 7.0)]);
        let first = footprint.line();
        assert!(
            first.contains("collector 1.00 CPU-s so far 7.0 MiB"),
            "{first}"
        );
        footprint
            .samples
            .lock()
            .extend([scraped(t0 + Duration::from_secs(10), 1.5, 8.0)]);
        let second = footprint.line();
        assert!(
            second.contains("collector 50.0 millicores 8.0 MiB"),
            "{second}"
        );
        assert!(second.contains("forwarder "), "{second}");
    }

    #[test]
    fn a_sidecar_that_is_down_is_named_with_the_cause() {
        let mut footprint = Footprint::start(
            BTreeMap::from([("collector".into(), "http://127.0.0.1:1/metrics".into())]),
            Duration::from_secs(3600),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut line = footprint.line();
        while !line.contains("collector unknown") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            line = footprint.line();
        }
        assert!(
            line.contains("collector unknown (http://127.0.0.1:1/metrics: Connection refused"),
            "{line}"
        );
    }
}
