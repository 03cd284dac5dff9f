//! Who may read the logs: the forwarder's query API with bearer tokens from a rotated Secret,
//! CORS for the configured origins only, `forwarder logs --token-file`, and the rule that an
//! API or ingest endpoint without a token stays on loopback. (Issue #17.)

mod query_http;

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{bin, free_port, metric, wait_until, write_secret_version, Pod, StageKind, Writer};
use query_http::request;

const TIMEOUT: Duration = Duration::from_secs(30);

fn get_with(port: u16, path: &str, token: Option<&str>) -> query_http::Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(port, "GET", path, &headers, b"")
}

#[test]
fn with_a_tokens_file_every_request_needs_one_of_its_tokens_and_a_rotation_takes_effect() {
    let mut pod = Pod::new();
    let secret = pod.path("secret");
    write_secret_version(
        &secret,
        "2026_12_06_01_00_00.1",
        "# readers\nfirst-t0ken\nother-t0ken\n",
    );
    pod.extra_args.insert(
        StageKind::Forwarder,
        vec![
            "--api-tokens-file".into(),
            secret.join("token").display().to_string(),
            "--api-cors-origin".into(),
            "https://viewer.example".into(),
        ],
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(20);
    let stages = pod.start_all();
    pod.wait_delivered(20, TIMEOUT);
    let forwarder = &stages[2];
    let api = forwarder.api_port;

    let refused = get_with(api, "/logs?tail=5", None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("needs a token"));
    let wrong = get_with(api, "/sources", Some("guess"));
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"]
        .as_str()
        .unwrap()
        .contains("not one of the configured tokens"));
    for token in ["first-t0ken", "other-t0ken"] {
        let answer = get_with(api, "/logs?tail=5", Some(token));
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.records().len(), 5);
    }
    assert_eq!(
        get_with(api, "/healthz", None).status,
        200,
        "probes need no token"
    );
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_query_unauthorized_requests_total"
        ),
        2.0
    );

    // The kubelet swaps in a new version of the Secret: the new token opens the API, the old
    // ones no longer do, without a restart.
    write_secret_version(&secret, "2026_12_06_02_00_00.2", "second-t0ken\n");
    assert!(
        wait_until(TIMEOUT, || get_with(api, "/sources", Some("second-t0ken"))
            .status
            == 200),
        "the rotated token is accepted"
    );
    assert_eq!(get_with(api, "/sources", Some("first-t0ken")).status, 401);

    // A browser's preflight from the configured origin is answered without a token; another
    // origin gets no CORS grant.
    let preflight = |origin: &str| {
        request(
            api,
            "OPTIONS",
            "/logs",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        )
    };
    let allowed = preflight("https://viewer.example");
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://viewer.example")
    );
    assert!(allowed
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("authorization")));
    assert_eq!(
        preflight("https://elsewhere.example").header("access-control-allow-origin"),
        None
    );

    // The CLI against the API: with the token file it reads, without it says what is missing.
    std::fs::write(pod.path("cli-token"), "second-t0ken\n").unwrap();
    let server = format!("http://127.0.0.1:{api}");
    let cli = |extra: &[&str]| {
        Command::new(bin("forwarder"))
            .args(["logs", "--server", &server, "-n", "3", "-o", "json"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let token_file = pod.path("cli-token").display().to_string();
    let out = cli(&["--token-file", &token_file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let out = cli(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the API needs a token: give --token-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a stage binary that should refuse to start; returns its stderr.
fn refused_start(binary: &str, args: &[String]) -> String {
    let out = Command::new(bin(binary))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{binary} started: {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_a_token_the_api_and_ingest_stay_on_loopback_unless_anonymous_access_is_asked_for() {
    let pod = Pod::new();
    let forwarder_args = |api_listen: String, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--input-dir".into(),
            pod.path("processed").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--api-listen".into(),
            api_listen,
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let api_port = free_port();
    let error = refused_start(
        "forwarder",
        &forwarder_args(format!("0.0.0.0:{api_port}"), &[]),
    );
    assert!(
        error.contains(&format!(
            "--api-listen 0.0.0.0:{api_port}: an address other than loopback"
        )) && error.contains("--api-tokens-file")
            && error.contains("--api-anonymous"),
        "{error}"
    );
    // Asked for by name, anonymous access off loopback starts, with a warning.
    let log = pod.path("anonymous.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(bin("forwarder"))
        .args(forwarder_args(
            format!("0.0.0.0:{api_port}"),
            &["--api-anonymous"],
        ))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let up = wait_until(TIMEOUT, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("without a token (--api-anonymous)"))
            || child.try_wait().unwrap().is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("anyone who reaches this address"),
        "the warning says what it means"
    );

    let ingest_port = free_port();
    let error = refused_start(
        "collector",
        &[
            "--watch".into(),
            format!("{}/*.log", pod.path("logs").display()),
            "--journal-dir".into(),
            pod.path("collected").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--ingest-listen".into(),
            format!("0.0.0.0:{ingest_port}"),
        ],
    );
    assert!(
        error.contains(&format!(
            "--ingest-listen 0.0.0.0:{ingest_port}: an address other than loopback"
        )) && error.contains("--ingest-token-file")
            && error.contains("--ingest-anonymous"),
        "{error}"
    );
}
