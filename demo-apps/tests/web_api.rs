//! The real `web-api` binary end to end: HTTP requests in, access, error and application log
//! lines out, and a clean exit with flushed files on SIGTERM.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{free_port, json_record, read_lines, sigterm, spawn, text_record, wait_exit};

/// What the client saw for one request.
#[derive(Debug)]
struct Seen {
    request_id: String,
    status: u16,
}

async fn send(request: reqwest::RequestBuilder) -> Seen {
    let response = request.send().await.expect("the server answers");
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("responses carry x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    Seen {
        request_id,
        status: response.status().as_u16(),
    }
}

#[tokio::test]
async fn requests_are_logged_and_sigterm_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = spawn(
        env!("CARGO_BIN_EXE_web-api"),
        &[
            "--listen",
            &listen,
            "--log-dir",
            dir.path().to_str().unwrap(),
            "--seed",
            "7",
        ],
    );
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();

    // Readiness: retry until the server answers.
    let started = Instant::now();
    let health = loop {
        match client.get(format!("{base}/health")).send().await {
            Ok(response) => break response,
            Err(_) if started.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("web-api never became ready: {error}"),
        }
    };
    assert_eq!(health.status(), 200);
    let health_body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health_body["users"], 20);

    let list = send(client.get(format!("{base}/users"))).await;
    let paged = send(
        client
            .get(format!("{base}/users?page=2&limit=5"))
            .header("user-agent", "curl/8.5.0"),
    )
    .await;
    let bad_json = send(
        client
            .post(format!("{base}/users"))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    let missing_email = send(
        client
            .post(format!("{base}/users"))
            .body(r#"{"name":"Zed"}"#),
    )
    .await;
    let created = send(
        client
            .post(format!("{base}/users"))
            .body(r#"{"name":"Zed Zee","email":"zed@example.com"}"#),
    )
    .await;
    let missing_user = send(client.get(format!("{base}/users/9999"))).await;

    assert!([200, 500].contains(&list.status), "{list:?}");
    assert!([200, 500].contains(&paged.status), "{paged:?}");
    assert_eq!(bad_json.status, 400);
    assert_eq!(missing_email.status, 400);
    assert!([201, 409].contains(&created.status), "{created:?}");
    assert_eq!(missing_user.status, 404);

    sigterm(&server);
    let status = wait_exit(&mut server, Duration::from_secs(10));
    assert!(status.success(), "web-api exited with {status}");

    // access.log: a request and a response record per request, the response with the status
    // the client saw.
    let access = read_lines(dir.path(), "access.log");
    let mut records: HashMap<String, Vec<serde_json::Map<String, serde_json::Value>>> =
        HashMap::new();
    for line in &access {
        let record = json_record(line);
        let id = record["request_id"].as_str().unwrap().to_owned();
        records.entry(id).or_default().push(record);
    }
    for seen in [
        &list,
        &paged,
        &bad_json,
        &missing_email,
        &created,
        &missing_user,
    ] {
        let pair = &records[&seen.request_id];
        assert_eq!(pair.len(), 2, "{seen:?}: {pair:?}");
        assert_eq!(pair[0]["type"], "request");
        assert_eq!(pair[1]["type"], "response");
        assert_eq!(pair[1]["status_code"], seen.status, "{seen:?}");
        assert!(pair[1]["content_length"].as_u64().unwrap() > 0);
        assert!(pair[1]["processing_time_ms"].as_f64().unwrap() >= 0.0);
        assert!(pair[0]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
    }
    let paged_request = &records[&paged.request_id][0];
    assert_eq!(paged_request["method"], "GET");
    assert_eq!(paged_request["path"], "/users");
    assert_eq!(paged_request["query"], "page=2&limit=5");
    assert_eq!(paged_request["user_agent"], "curl/8.5.0");
    assert_eq!(records[&bad_json.request_id][0]["method"], "POST");
    assert_eq!(records[&list.request_id][0]["query"], "");

    // error.log: the two 400s, each naming its request.
    let errors: Vec<_> = read_lines(dir.path(), "error.log")
        .iter()
        .map(|line| text_record(line))
        .collect();
    let error_for = |seen: &Seen| {
        errors
            .iter()
            .find(|(_, _, message)| message.ends_with(&format!("(request_id={})", seen.request_id)))
            .unwrap_or_else(|| panic!("no error line for {seen:?} in {errors:?}"))
    };
    let (logger, level, message) = error_for(&bad_json);
    assert_eq!((logger.as_str(), level.as_str()), ("web-api", "ERROR"));
    assert!(
        message.starts_with("Validation failed for POST /users: invalid JSON body"),
        "{message}"
    );
    let (_, _, message) = error_for(&missing_email);
    assert!(message.starts_with("Validation failed for POST /users: missing field 'email'"));
    if list.status == 500 {
        assert!(error_for(&list)
            .2
            .starts_with("Database connection timeout"));
    }

    // application.log: the 404 and the listing.
    let application: Vec<_> = read_lines(dir.path(), "application.log")
        .iter()
        .map(|line| text_record(line))
        .collect();
    assert!(application
        .iter()
        .all(|(logger, _, _)| logger == "application"));
    assert!(application
        .iter()
        .any(|(_, level, message)| level == "WARNING" && message == "User 9999 not found"));
    if created.status == 201 {
        assert!(application
            .iter()
            .any(|(_, level, message)| level == "INFO" && message == "Created user 21"));
    }
}

#[test]
fn traffic_generator_waits_for_the_api_then_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // The generator starts first and must wait quietly for the server.
    let mut traffic = spawn(
        env!("CARGO_BIN_EXE_traffic-generator"),
        &[
            "--target",
            &format!("http://{listen}"),
            "--requests-per-sec",
            "40",
            "--seed",
            "1",
            "--duration-secs",
            "2",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut server = spawn(
        env!("CARGO_BIN_EXE_web-api"),
        &[
            "--listen",
            &listen,
            "--log-dir",
            dir.path().to_str().unwrap(),
        ],
    );

    let status = wait_exit(&mut traffic, Duration::from_secs(20));
    assert!(status.success(), "traffic-generator exited with {status}");
    sigterm(&server);
    assert!(wait_exit(&mut server, Duration::from_secs(10)).success());

    let mut stdout = String::new();
    std::io::Read::read_to_string(traffic.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let summary = regex::Regex::new(
        r"^traffic-generator: (\d+) requests in \ds:( \d{3}=\d+)+ failed=(\d+)\n$",
    )
    .unwrap();
    let captures = summary
        .captures(&stdout)
        .unwrap_or_else(|| panic!("unexpected summary: {stdout:?}"));
    let requests: usize = captures[1].parse().unwrap();
    assert!(requests >= 20, "{stdout}");
    assert!(stdout.contains(" 200="), "{stdout}");

    let responses = read_lines(dir.path(), "access.log")
        .iter()
        .filter(|line| json_record(line)["type"] == "response")
        .count();
    // Every request the generator counted reached the server (plus its readiness probes).
    let failed: usize = captures[3].parse().unwrap();
    assert!(
        responses >= requests - failed,
        "{responses} responses, {stdout}"
    );
}
