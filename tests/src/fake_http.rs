//! A stand-in HTTP/1.1 server for the network sinks' tests: it records each request (body
//! un-gzipped), lets the test's handler check the wire format and choose the answer, and can
//! accept a request and never answer. Loki, Elasticsearch, an OpenTelemetry collector and Splunk
//! cannot run here; tests put the documented wire format in their handlers instead.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wait_until;

/// How long [`FakeServer::wait_for`] waits.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One request as the server received it (body already un-gzipped).
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// What the server answered (`None`: it never did).
    pub status: Option<u16>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn lines(&self) -> Vec<Value> {
        self.body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("every body line is JSON"))
            .collect()
    }
}

/// What the server answers; `None` from a handler means: never answer.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

pub type Handler = Box<dyn FnMut(&Request) -> Option<Response> + Send>;

/// A stand-in for Loki/Elasticsearch/an HTTP collector on a loopback port.
pub struct FakeServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Wire-format checks that failed inside the handler (answered 500, and reported by
    /// [`FakeServer::wait_for`]).
    violations: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    pub fn start(handler: impl FnMut(&Request) -> Option<Response> + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Box::new(handler)));
        let (r, v, s) = (requests.clone(), violations.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, v, s, h) = (r.clone(), v.clone(), s.clone(), handler.clone());
                        std::thread::spawn(move || serve_connection(stream, &r, &v, &s, &h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            requests,
            violations,
            stop,
        }
    }

    /// Waits until `condition` holds, failing at once with the first wire-format violation.
    pub fn wait_for(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let ok = wait_until(TIMEOUT, || {
            !self.violations.lock().unwrap().is_empty() || condition()
        });
        let violations = self.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "wire format: {violations:#?}");
        assert!(ok, "timed out waiting for {what}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests answered with a 2xx status.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_connection(
    stream: TcpStream,
    requests: &Mutex<Vec<Request>>,
    violations: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    handler: &Mutex<Handler>,
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut request) = read_request(&mut reader, stop) else {
            return;
        };
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (handler.lock().unwrap_or_else(|p| p.into_inner()))(&request)
        }));
        let response = checked.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            violations.lock().unwrap().push(message);
            Some(Response::status(500))
        });
        request.status = response.as_ref().map(|r| r.status);
        requests.lock().unwrap().push(request);
        let Some(response) = response else {
            // Accept and never answer: hold the connection until the client gives up.
            while !stop.load(Ordering::Relaxed) {
                let mut byte = [0u8; 1];
                match reader.read(&mut byte) {
                    Ok(0) => return,
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            return;
        };
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            response.status,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&response.body).is_err() {
            return;
        }
    }
}

/// Reads one request from `reader` (None when the peer closed or `stop` was set).
pub fn read_request(reader: &mut impl BufRead, stop: &AtomicBool) -> Option<Request> {
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("POST"), "sinks only POST: {line}");
    let path = parts.next().unwrap().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap();
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .expect("bodies carry a Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .expect("a gzip body is valid gzip");
        body = plain;
    }
    Some(Request {
        path,
        headers,
        body,
        at: Instant::now(),
        status: None,
    })
}
