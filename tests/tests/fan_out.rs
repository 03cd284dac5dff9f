//! One query across pods (issue #17): `forwarder logs --selector` and `/logs?selector=` find the
//! pods through the in-test Kubernetes API server (no cluster runs here; `e2e_tests::kube_api`
//! speaks the pods list API with a `labelSelector`), ask each pod's forwarder (real
//! pipelines on loopback, each pod's API port given as its `forwarder-api` container port),
//! merge the answers by time and mark each line with its pod; a pod that does not answer is
//! named, not fatal.

mod query_http;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e_tests::kube_api::FakeApiServer;
use e2e_tests::{bin, free_port, wait_until, Pod, StageKind, Writer};
use k8s_openapi::api::core::v1::Pod as KubePod;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);
const TOKEN: &str = "fan-0ut-t0ken";

/// A pod as the API server lists it: running on loopback with its query API on `api_port`.
fn kube_pod(name: &str, app: &str, api_port: u16, phase: &str) -> KubePod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": app}},
        "spec": {
            "containers": [{"name": "web"}],
            "initContainers": [{"name": "log-forwarder", "ports": [
                {"name": "forwarder-http", "containerPort": 9103},
                {"name": "forwarder-api", "containerPort": api_port}
            ]}]
        },
        "status": {"phase": phase, "podIP": "127.0.0.1"}
    }))
    .unwrap()
}

/// A pipeline whose forwarder's API wants `TOKEN` and finds pods through `api_server`.
fn start_pod(file: &str, lines: u64, api_server: &str) -> (Pod, Vec<e2e_tests::Stage>, Writer) {
    let mut pod = Pod::new();
    std::fs::write(pod.path("tokens"), format!("{TOKEN}\n")).unwrap();
    pod.extra_args.insert(
        StageKind::Forwarder,
        vec![
            "--api-tokens-file".into(),
            pod.path("tokens").display().to_string(),
            "--kubernetes-api".into(),
            api_server.to_owned(),
        ],
    );
    let mut app = Writer::open(
        pod.path(&format!("logs/{file}")),
        file.trim_end_matches(".log"),
    );
    app.write(lines);
    let stages = pod.start_all();
    pod.wait_delivered(lines as usize, TIMEOUT);
    (pod, stages, app)
}

fn cli(api_server: &str, token_file: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(bin("forwarder"));
    command
        .args([
            "logs",
            "--selector",
            "app=web",
            "--selector-namespace",
            "demo",
        ])
        .args(["--kubernetes-api", api_server, "--token-file", token_file])
        .args(extra)
        .stdin(Stdio::null());
    command
}

#[test]
fn a_query_across_pods_merges_their_lines_by_time_and_names_the_pod_that_did_not_answer() {
    let api = FakeApiServer::start(Vec::new(), false);
    let (pod_a, stages_a, mut app_a) = start_pod("alpha.log", 10, &api.url());
    let (pod_b, stages_b, mut app_b) = start_pod("beta.log", 10, &api.url());
    // Lines alternate between the pods, so the newest 20 by time hold both.
    for _ in 0..10 {
        app_a.write(1);
        std::thread::sleep(Duration::from_millis(20));
        app_b.write(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    pod_a.wait_delivered(20, TIMEOUT);
    pod_b.wait_delivered(20, TIMEOUT);
    let silent_port = free_port();
    api.add(kube_pod("web-a", "web", stages_a[2].api_port, "Running"));
    api.add(kube_pod("web-b", "web", stages_b[2].api_port, "Running"));
    api.add(kube_pod("web-silent", "web", silent_port, "Running"));
    api.add(kube_pod("web-pending", "web", 1, "Pending"));
    api.add(kube_pod("db-0", "db", stages_a[2].api_port, "Running"));
    let token_file = pod_a.path("tokens").display().to_string();

    // The CLI: the last 20 lines of both pods, in time order, each marked.
    let out = cli(&api.url(), &token_file, &["-n", "20", "-o", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 20, "{records:#?}");
    let pods: BTreeSet<&str> = records
        .iter()
        .map(|r| r["source_pod"].as_str().unwrap())
        .collect();
    assert_eq!(
        pods,
        BTreeSet::from(["web-a", "web-b"]),
        "db-0 is not selected"
    );
    let times: Vec<&str> = records
        .iter()
        .map(|r| r["collected_at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "merged by time: {times:?}"
    );
    for r in &records {
        let file = if r["source_pod"] == "web-a" {
            "alpha"
        } else {
            "beta"
        };
        assert_eq!(
            r["file"], file,
            "each line marked with the pod it came from: {r}"
        );
    }
    assert!(stderr.contains("pod web-silent"), "{stderr}");
    assert!(
        stderr.contains("pod web-pending not asked: not running (Pending)"),
        "{stderr}"
    );

    // Text lines start with the pod.
    let out = cli(&api.url(), &token_file, &["-n", "4"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with("[web-a] ") || l.starts_with("[web-b] ")),
        "{text}"
    );

    // The same on a pod's API, which finds the others itself.
    let answer = query_http::request(
        stages_b[2].api_port,
        "GET",
        "/logs?selector=app%3Dweb&selector_namespace=demo&tail=10",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("x-logs-pods"),
        Some("web-a; web-b; web-silent")
    );
    assert!(answer
        .header("x-logs-missing-pods")
        .is_some_and(|m| m.starts_with("web-silent: ")));
    assert!(answer
        .header("x-logs-left-out")
        .is_some_and(|m| m.contains("web-pending")));
    let records = answer.records();
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r["source_pod"].is_string()));

    // A follow across pods shows each pod's new lines as they arrive.
    let mut follow = cli(&api.url(), &token_file, &["-f", "-n", "0", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    app_b.write(1);
    app_a.write(1);
    let mut seen = BTreeSet::new();
    let arrived = wait_until(TIMEOUT, || {
        while let Ok(line) = received.try_recv() {
            let r: Value = serde_json::from_str(&line).unwrap();
            seen.insert((
                r["source_pod"].as_str().unwrap().to_owned(),
                r["seq"].as_u64().unwrap(),
            ));
        }
        seen.len() >= 2
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(arrived, "{seen:?}");
    assert_eq!(
        seen,
        BTreeSet::from([("web-a".to_owned(), 20), ("web-b".to_owned(), 20)])
    );
    drop((pod_a, pod_b, stages_a, stages_b));
}
