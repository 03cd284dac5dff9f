//! Issue #12: every `/metrics` endpoint passes Prometheus' own checker (`promtool check
//! metrics`, from Debian's `prometheus` package, installed by `scripts/install-test-deps.sh`),
//! answers OpenMetrics only to a scraper that asks for it, and carries the standard process
//! metrics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_tests::{Pod, Writer};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// GET `/metrics` with an optional `Accept`; returns (content type, body).
fn scrape(port: u16, accept: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the endpoint listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// Runs `promtool check metrics` on `text`; returns its complaints (empty when it passes).
fn promtool_complaints(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): run scripts/install-test-deps.sh (Debian package `prometheus`)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        complaints.trim().to_owned()
    } else {
        format!("exit {}: {complaints}", out.status)
    }
}

fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn every_metrics_endpoint_passes_promtool_and_negotiates_its_format() {
    let mut pod = Pod::new();
    let mut w = Writer::open(pod.path("logs/access.log"), "access");
    w.write(20);
    let stages = pod.start_all();
    pod.wait_delivered(20, DELIVERY_TIMEOUT);
    let endpoints = [
        ("collector", stages[0].port),
        ("processor", stages[1].port),
        ("forwarder", stages[2].port),
        ("forwarder query API", stages[2].api_port),
    ];
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (name, port) in endpoints {
        let (content_type, text) = scrape(port, None);
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{name}"
        );
        assert_eq!(promtool_complaints(&text), "", "{name}:\n{text}");
        // What Prometheus sends: OpenMetrics first, the text format as a fallback.
        let (content_type, open) = scrape(
            port,
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        );
        assert!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "{name}: {content_type}"
        );
        assert!(open.ends_with("# EOF\n"), "{name}");
        assert!(!text.contains("# EOF"), "{name}");
        if port == stages[2].api_port {
            continue; // the same process as the forwarder: its process metrics are there
        }
        let rss = value(&text, "process_resident_memory_bytes");
        assert!((1e6..256e6).contains(&rss), "{name}: rss {rss}");
        assert!(value(&text, "process_open_fds") >= 3.0, "{name}");
        assert!(value(&text, "process_cpu_seconds_total") >= 0.0, "{name}");
        let started = value(&text, "process_start_time_seconds");
        assert!(
            (now_s - 600.0..=now_s + 5.0).contains(&started),
            "{name}: started at {started}, now {now_s}"
        );
    }
    // The counters promtool used to reject keep their values in the text format.
    let (_, text) = scrape(stages[0].port, None);
    assert!(
        text.contains("# TYPE collector_lines_total counter")
            && text.contains("collector_lines_total{source=\"access.log\"} 20"),
        "{text}"
    );
}

#[test]
fn the_report_shows_each_sidecars_cpu_and_memory() {
    let mut pod = Pod::new();
    let mut w = Writer::open(pod.path("logs/app.log"), "app");
    w.write(10);
    let collector = pod.start(e2e_tests::StageKind::Collector);
    let processor = pod.start(e2e_tests::StageKind::Processor);
    let config = pod.path("forwarder.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "report:\n",
        &format!(
            "report:\n  sidecars:\n    collector: http://127.0.0.1:{}/metrics\n    processor: http://127.0.0.1:{}/metrics\n    gone: http://127.0.0.1:1/metrics\n",
            collector.port, processor.port
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let forwarder = pod.start(e2e_tests::StageKind::Forwarder);
    pod.wait_delivered(10, DELIVERY_TIMEOUT);
    // Reports come every second; the second one of a sidecar shows millicores.
    let line = || {
        std::fs::read_to_string(&forwarder.log)
            .unwrap()
            .lines()
            .rfind(|l| l.starts_with("sidecars: "))
            .map(str::to_owned)
    };
    let shows_all = |l: &str| {
        ["collector", "processor", "forwarder"]
            .iter()
            .all(|name| l.contains(&format!("{name} ")) && l.contains("millicores"))
    };
    assert!(
        e2e_tests::wait_until(Duration::from_secs(30), || line()
            .is_some_and(|l| shows_all(&l))),
        "{:?}",
        line()
    );
    let line = line().unwrap();
    assert!(line.contains("MiB"), "{line}");
    assert!(
        line.contains("gone unknown (http://127.0.0.1:1/metrics: Connection refused"),
        "{line}"
    );
}
