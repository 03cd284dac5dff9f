//! What every HTTP-based sink shares: the client (timeouts, TLS, auth), splitting a journal
//! batch into requests, gzip, classifying replies, backoff, cancellation, dead letters and
//! metrics. [`NetworkSink`] drives a [`Protocol`] (http, loki, elasticsearch) through all of it.
//! The pieces have a file each: the settings (`spec.rs`), the client and its runtime
//! (`endpoint.rs`), the `Authorization` header (`auth.rs`), what a reply means (`reply.rs`),
//! and metrics (`metrics.rs`); this file splits batches and keeps
//! what is owed.
//!
//! Easy to get wrong: what a failed `send` leaves behind. A batch is split into requests; some
//! may be taken, some refused for a while (429/5xx, timeouts), some refused for good (other
//! 4xx), and Elasticsearch answers per item. The sink remembers which records of the batch are
//! still owed and, when the forwarder offers the same batch again, sends only those. Records a
//! server refuses for good go to the dead-letter journal before `send` reports success, so the
//! forwarder's commit never passes a record that is neither delivered nor kept.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::Url;
use serde_json::Value;
use tracing::{error, warn};

use super::dead_letter::{DeadLetter, DeadLetterSpec};
use super::owed::Owed;
use super::{OutRecord, Sink, SinkError};
use crate::backoff::Backoff;
use crate::signal::CancellationToken;

mod auth;
mod endpoint;
mod metrics;
mod reply;
mod spec;

pub use endpoint::{redact_url, Endpoint, EndpointError};
pub use metrics::register_metrics;
pub use reply::{excerpt, is_retryable, Reply};
pub use spec::{
    AuthSpec, BatchSpec, EndpointSpec, HttpEndpointFields, NoOtherKeys, RetrySpec, TimeoutSpec,
    TlsSpec,
};

/// gzip at the fastest level: the sidecar's CPU is the scarce resource, and level 1 already
/// shrinks repetitive JSON logs several times.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder
        .write_all(body)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// What a protocol makes of a reply, per record of the request: every position not listed
/// was taken.
#[derive(Debug, Default)]
pub struct ItemResults {
    /// Positions (in the request's record list) the server asks to send again.
    pub retry: Vec<(usize, String)>,
    /// Positions the server refused for good, with status and reason.
    pub refused: Vec<(usize, u16, String)>,
    /// The server took the request but confirms it later under this id (Splunk's indexer
    /// acknowledgement): its records count as delivered only once [`Protocol::confirm`] says so.
    pub awaiting: Option<u64>,
}

/// What [`Protocol::confirm`] learnt about the requests awaiting confirmation.
#[derive(Debug, Default)]
pub struct Confirmations {
    /// The ids the server confirmed.
    pub confirmed: Vec<u64>,
    /// Why the others are not (they are sent again).
    pub reason: String,
}

/// One wire protocol on top of the shared machinery.
pub trait Protocol: Send {
    /// The MIME type of the request body.
    fn content_type(&self) -> &'static str;

    /// Where requests go.
    fn url(&self) -> &Url;

    /// Writes the request body for `records` into `body` (cleared by the caller).
    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>);

    /// Reads a 2xx reply to a request of `count` records; by default the whole request was
    /// taken.
    ///
    /// # Errors
    /// When the reply cannot be understood; the request is then retried as a whole.
    fn accepted(&mut self, reply: &[u8], count: usize) -> Result<ItemResults, String> {
        let _ = (reply, count);
        Ok(ItemResults::default())
    }

    /// Bytes a record adds to a body (for cutting requests by size).
    fn record_bytes(&self, record: &OutRecord<'_>) -> usize {
        record.raw.len() + 1
    }

    /// Looks at a reply to a request of `count` records before the shared rules act on it, for
    /// a server whose error text says more than its status (ClickHouse answers a table that
    /// does not fit the rows with 400 or 500 alike; Splunk names the event it stopped at). By
    /// default the status decides.
    fn review(&mut self, reply: Reply, count: usize) -> Reply {
        let _ = count;
        reply
    }

    /// Waits until the server confirms the requests it took under `ids` (see
    /// [`ItemResults::awaiting`]), asking through `endpoint`. Only protocols that set
    /// `awaiting` are asked; by default everything is confirmed.
    fn confirm(&mut self, endpoint: &mut Endpoint, ids: &[u64]) -> Confirmations {
        let _ = endpoint;
        Confirmations {
            confirmed: ids.to_vec(),
            reason: String::new(),
        }
    }
}

/// A sink speaking `P` over HTTP: requests cut by size, retried with backoff, refused
/// records dead-lettered.
pub struct NetworkSink<P> {
    name: String,
    endpoint: Endpoint,
    protocol: P,
    batch: BatchSpec,
    backoff: Backoff,
    dead_letter: DeadLetter,
    owed: Owed,
    delay: Option<Duration>,
    body: Vec<u8>,
}

impl<P: Protocol> NetworkSink<P> {
    /// A sink for `spec` speaking `protocol`, dead-lettering into `dead_letter`'s directory.
    ///
    /// # Errors
    /// When the endpoint cannot be set up or the dead-letter journal cannot be opened.
    pub fn new(
        spec: &EndpointSpec<'_>,
        protocol: P,
        dead_letter: &DeadLetterSpec,
    ) -> Result<Self, SinkError> {
        let endpoint = Endpoint::new(spec).map_err(|e| SinkError::Setup {
            sink: spec.name.to_owned(),
            source: Box::new(e),
        })?;
        let dead_letter = DeadLetter::open(spec.name, dead_letter)?;
        Ok(Self {
            name: spec.name.to_owned(),
            endpoint,
            protocol,
            batch: spec.batch.clone(),
            backoff: Backoff::new(spec.retry.initial_backoff.0, spec.retry.max_backoff.0),
            dead_letter,
            owed: Owed::default(),
            delay: None,
            body: Vec::new(),
        })
    }

    /// Cuts `owed` (positions in `batch`) into requests of at most `max_records` records and
    /// about `max_bytes` bytes.
    fn requests(&self, batch: &[OutRecord<'_>], owed: Vec<usize>) -> VecDeque<Vec<usize>> {
        let mut requests = VecDeque::new();
        let mut current = Vec::new();
        let mut bytes = 0;
        for i in owed {
            let size = self.protocol.record_bytes(&batch[i]);
            if !current.is_empty()
                && (current.len() >= self.batch.max_records
                    || bytes + size > self.batch.max_bytes.0 as usize)
            {
                requests.push_back(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += size;
            current.push(i);
        }
        if !current.is_empty() {
            requests.push_back(current);
        }
        requests
    }
}

/// The outcome of delivering what was owed of a batch.
#[derive(Default)]
struct Round {
    retry: Vec<usize>,
    refused: Vec<(usize, u16, String)>,
    unavailable: Option<(String, Option<Duration>)>,
    /// Requests the server took but has yet to confirm, by confirmation id.
    awaiting: Vec<(u64, Vec<usize>)>,
}

impl<P: Protocol> NetworkSink<P> {
    fn deliver_round(&mut self, batch: &[OutRecord<'_>], owed: Vec<usize>) -> Round {
        let mut round = Round::default();
        let mut queue = self.requests(batch, owed);
        while let Some(request) = queue.pop_front() {
            if round.unavailable.is_some() {
                // The server is down: do not knock again within this round.
                round.retry.extend(request);
                continue;
            }
            let records: Vec<&OutRecord<'_>> = request.iter().map(|&i| &batch[i]).collect();
            let mut body = std::mem::take(&mut self.body);
            body.clear();
            self.protocol.encode(&records, &mut body);
            let url = self.protocol.url().clone();
            let content_type = self.protocol.content_type();
            // The body goes to the client; keep the allocation's size for the next one.
            self.body = Vec::with_capacity(body.capacity());
            let reply = self.endpoint.post(&url, content_type, body);
            match self.protocol.review(reply, request.len()) {
                Reply::Accepted(reply) => match self.protocol.accepted(&reply, request.len()) {
                    Ok(items) => self.take_items(request, items, &mut round),
                    Err(reason) => {
                        self.endpoint.metrics.retries.inc();
                        round.unavailable = Some((reason, None));
                        round.retry.extend(request);
                    }
                },
                Reply::Partial(items) => self.take_items(request, items, &mut round),
                Reply::Refused { status, reason } if request.len() > 1 => {
                    // Which record is bad? Halve until each refusal names one record; the
                    // good halves are delivered on the way.
                    let (left, right) = request.split_at(request.len() / 2);
                    warn!(sink = %self.name, status, records = request.len(), reason = %reason, "The server refused a request; splitting it to find the records it refuses.");
                    queue.push_front(right.to_vec());
                    queue.push_front(left.to_vec());
                }
                Reply::Refused { status, reason } => {
                    round.refused.push((request[0], status, reason));
                }
                Reply::Unavailable {
                    reason,
                    retry_after,
                } => {
                    self.endpoint.metrics.retries.inc();
                    round.unavailable = Some((reason, retry_after));
                    round.retry.extend(request);
                }
            }
        }
        self.settle_awaiting(&mut round);
        round
    }

    /// Books what the server made of each record of `request`.
    fn take_items(&mut self, request: Vec<usize>, items: ItemResults, round: &mut Round) {
        if let Some((_, reason)) = items.retry.first() {
            warn!(sink = %self.name, items = items.retry.len(), first_reason = %reason, "The server refused some items for now; retrying those alone.");
            self.endpoint
                .metrics
                .retries
                .inc_by(items.retry.len() as u64);
        }
        round
            .retry
            .extend(items.retry.iter().map(|(i, _)| request[*i]));
        round.refused.extend(
            items
                .refused
                .iter()
                .map(|(i, status, reason)| (request[*i], *status, reason.clone())),
        );
        let mut not_taken = vec![false; request.len()];
        for i in items.retry.iter().map(|(i, _)| *i) {
            not_taken[i] = true;
        }
        for i in items.refused.iter().map(|(i, _, _)| *i) {
            not_taken[i] = true;
        }
        let taken: Vec<usize> = request
            .iter()
            .zip(not_taken)
            .filter_map(|(&record, not_taken)| (!not_taken).then_some(record))
            .collect();
        match items.awaiting {
            Some(id) => round.awaiting.push((id, taken)),
            None => {
                self.endpoint.metrics.records.inc_by(taken.len() as u64);
            }
        }
    }

    /// Asks the server to confirm the requests it took; what it does not confirm is sent
    /// again.
    fn settle_awaiting(&mut self, round: &mut Round) {
        if round.awaiting.is_empty() {
            return;
        }
        let ids: Vec<u64> = round.awaiting.iter().map(|(id, _)| *id).collect();
        let answer = self.protocol.confirm(&mut self.endpoint, &ids);
        for (id, records) in std::mem::take(&mut round.awaiting) {
            if answer.confirmed.contains(&id) {
                self.endpoint.metrics.records.inc_by(records.len() as u64);
            } else {
                self.endpoint.metrics.retries.inc();
                round.retry.extend(records);
                if round.unavailable.is_none() {
                    round.unavailable = Some((answer.reason.clone(), None));
                }
            }
        }
    }
}

impl<P: Protocol> Sink for NetworkSink<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        let (id, owed) = self.owed.take_for(batch);
        let mut round = self.deliver_round(batch, owed);
        if !round.refused.is_empty() {
            let count = round.refused.len();
            if let Err(e) = self.dead_letter.keep(&self.name, batch, &round.refused) {
                // Not kept, so not done with: they are sent (and refused) again next time.
                round.retry.extend(round.refused.iter().map(|(i, _, _)| *i));
                round.unavailable = Some((format!("{e:#}"), None));
            } else {
                self.endpoint.metrics.dead_lettered.inc_by(count as u64);
                let (_, status, reason) = &round.refused[0];
                error!(sink = %self.name, records = count, status, first_reason = %reason, dead_letter = %self.dead_letter.dir().display(), "The server refused records for good; they are kept in the dead-letter journal.");
            }
        }
        if round.retry.is_empty() {
            self.backoff.reset();
            self.delay = None;
            return Ok(());
        }
        let (reason, retry_after) = round
            .unavailable
            .unwrap_or_else(|| ("some items were refused for now".into(), None));
        self.delay = Some(match retry_after {
            Some(after) => self.backoff.server_delay(after),
            None => self.backoff.next_delay(),
        });
        let owed = round.retry.len();
        self.owed.keep(id, round.retry);
        Err(SinkError::Unavailable {
            sink: self.name.clone(),
            url: self.endpoint.shown_url().to_owned(),
            owed,
            reason,
        })
    }

    fn state(&self) -> Value {
        Value::Null
    }

    fn retry_delay(&self) -> Option<Duration> {
        self.delay
    }

    fn linger(&self) -> Duration {
        self.batch.linger.0
    }

    fn batch_bytes(&self) -> usize {
        usize::try_from(self.batch.max_bytes.0).unwrap_or(usize::MAX)
    }

    fn cancel_handle(&self) -> Option<CancellationToken> {
        Some(self.endpoint.cancel_handle())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::reply::parse_retry_after;
    use super::*;
    use crate::config::ByteSize;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn statuses_split_into_retried_and_refused() {
        for s in [429, 500, 502, 503, 504, 401, 403, 404, 408] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [400, 409, 413, 422] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    #[test]
    fn logged_urls_lose_their_credentials() {
        let url = Url::parse("https://elastic:s3cret@es.example:9200/_bulk").unwrap();
        let shown = redact_url(&url);
        assert_eq!(shown, "https://es.example:9200/_bulk");
    }

    fn spec_with<'a>(
        url: &'a str,
        auth: Option<&'a AuthSpec>,
        parts: &'a (
            BTreeMap<String, String>,
            TlsSpec,
            TimeoutSpec,
            RetrySpec,
            BatchSpec,
        ),
    ) -> EndpointSpec<'a> {
        EndpointSpec {
            name: "t",
            url,
            headers: parts.0.clone(),
            auth,
            tls: &parts.1,
            timeouts: &parts.2,
            retry: &parts.3,
            batch: &parts.4,
            gzip: false,
        }
    }

    #[test]
    fn secrets_are_read_from_files_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ps3cret\n").unwrap();
        let parts = Default::default();
        let auth = AuthSpec::Bearer {
            token_file: Some(dir.path().join("token")),
            token_env: None,
        };
        let endpoint =
            Endpoint::new(&spec_with("http://127.0.0.1:1/x", Some(&auth), &parts)).unwrap();
        let header = &endpoint.headers[reqwest::header::AUTHORIZATION];
        assert_eq!(header.to_str().unwrap(), "Bearer t0ps3cret");
        assert!(header.is_sensitive());
        assert!(!format!("{:?}", endpoint.headers).contains("t0ps3cret"));

        let auth = AuthSpec::Basic {
            username: "u".into(),
            password_file: None,
            password_env: Some("SIDECAR_TEST_UNSET_VARIABLE".into()),
        };
        let err = Endpoint::new(&spec_with("http://127.0.0.1:1/x", Some(&auth), &parts))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "sink t: auth.basic.password_env: environment variable SIDECAR_TEST_UNSET_VARIABLE is not set"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let mut parts: (
            BTreeMap<String, String>,
            TlsSpec,
            TimeoutSpec,
            RetrySpec,
            BatchSpec,
        ) = Default::default();
        parts.1.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = Endpoint::new(&spec_with("https://es:9200", None, &parts))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "sink t: cannot read tls.ca_file /nonexistent/ca.pem");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        parts.1.ca_file = Some(dir.path().join("ca.pem"));
        let err = Endpoint::new(&spec_with("https://es:9200", None, &parts))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("sink t: tls.ca_file: "), "{err}");
    }

    struct Lines(Url);

    impl Protocol for Lines {
        fn content_type(&self) -> &'static str {
            "text/plain"
        }
        fn url(&self) -> &Url {
            &self.0
        }
        fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
            for r in records {
                body.extend_from_slice(r.raw);
            }
        }
    }

    #[test]
    fn batches_are_cut_into_requests_by_records_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut parts: (
            BTreeMap<String, String>,
            TlsSpec,
            TimeoutSpec,
            RetrySpec,
            BatchSpec,
        ) = Default::default();
        parts.4 = BatchSpec {
            max_records: 3,
            max_bytes: ByteSize(2048),
            ..BatchSpec::default()
        };
        let spec = spec_with("http://127.0.0.1:1/", None, &parts);
        let dead = DeadLetterSpec {
            directory: Some(dir.path().to_owned()),
            ..DeadLetterSpec::default()
        };
        let sink = NetworkSink::new(
            &spec,
            Lines(Url::parse("http://127.0.0.1:1/").unwrap()),
            &dead,
        )
        .unwrap();
        let small = vec![b'a'; 100];
        let big = vec![b'b'; 1500];
        let raws: Vec<&[u8]> = vec![&small, &small, &small, &small, &big, &small, &big, &big];
        let batch: Vec<OutRecord<'_>> = raws.iter().map(|r| OutRecord::decode(r)).collect();
        let requests: Vec<Vec<usize>> = sink.requests(&batch, (0..8).collect()).into();
        // 3 records at most; 2048 bytes at most, except a record alone.
        assert_eq!(
            requests,
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6], vec![7]]
        );
        let requests: Vec<Vec<usize>> = sink.requests(&batch, vec![1, 5]).into();
        assert_eq!(requests, vec![vec![1, 5]], "only what is owed");
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"{\"a\":1}\n".repeat(1000);
        let packed = gzip(&body);
        assert!(packed.len() < body.len() / 10);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
