//! The syslog sink: every record as one RFC 5424 message, over TCP with octet-counting framing
//! (RFC 6587 §3.4.1), the same inside TLS (RFC 5425), or over UDP (RFC 5426, one message per
//! datagram).
//!
//! A message is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`: PRI from the
//! configured facility and a severity mapped from `log_level`, TIMESTAMP the record's
//! `collected_at`, structured data with the record's id, source file and level, and MSG the
//! record's message or its whole JSON.
//!
//! Easy to get wrong: what "delivered" means. Syslog has no acknowledgement. Over TCP or TLS a batch
//! is written with one write and counts as delivered once the kernel took it; a connection the
//! server closed is noticed before the next batch and the batch is sent again on a new one, but
//! bytes in flight when a server dies can be lost (RELP or the other sinks acknowledge; this
//! protocol cannot). Over UDP a datagram may be dropped anywhere without anyone knowing;
//! messages longer than `max_message_bytes` are cut to fit and counted (`truncated`).

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::batch_metrics::{BatchFamilies, BatchMetrics};
use super::{OutRecord, Sink, SinkError};
use crate::config::{ByteSize, FieldError, HumanDuration};

mod rfc5424;
mod tls;
use rfc5424::{check_header_field, check_sd_name, Formatter};

/// A syslog sink in `forwarder.yaml` (`type: syslog`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSpec {
    /// Unique name (default `syslog`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The server, `host:port` (resolved again on every reconnect).
    pub address: String,
    /// `tcp` (default; octet-counted frames), `tls` (the same over TLS, RFC 5425) or `udp`.
    #[serde(default)]
    pub transport: Transport,
    /// `tls` only: PEM file of the CA that signed the server's certificate (default the
    /// system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `tls` only: the name the server's certificate must carry (default the address' host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The facility in PRI (default `user`).
    #[serde(default)]
    pub facility: Facility,
    /// The severity of records without a known `log_level` (default `notice`).
    #[serde(default = "default_severity")]
    pub default_severity: Severity,
    /// HOSTNAME (default `$HOSTNAME`, in Kubernetes the pod's name, else the kernel's).
    #[serde(default)]
    pub hostname: Option<String>,
    /// APP-NAME (default the record's source file without `.log`, e.g. `access`).
    #[serde(default)]
    pub app_name: Option<String>,
    /// PROCID (default `-`, none: the app's process id is not known to the sidecars).
    #[serde(default)]
    pub proc_id: Option<String>,
    /// MSGID (default the record's `log_category`, e.g. `access`).
    #[serde(default)]
    pub msg_id: Option<String>,
    /// The SD-ID of the element carrying `id`, `source` and `level` (default `log@32473`;
    /// 32473 is the example enterprise number of RFC 5612: use your own where it matters).
    #[serde(default = "default_sd_id")]
    pub sd_id: String,
    /// MSG: `message` (the record's message, else its raw line, else its JSON; default) or
    /// `record` (the whole record JSON).
    #[serde(default)]
    pub body: Body,
    /// A message longer than this is cut to fit and counted (default 2048 over UDP, the size
    /// RFC 5424 §6.1 says every receiver should accept; 8192 over TCP, rsyslog's default
    /// maximum). At least 480 (RFC 5426 §3.2).
    #[serde(default)]
    pub max_message_bytes: Option<ByteSize>,
    /// Connecting may take this long (default 5 s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Writing a batch may take this long (default 5 s).
    #[serde(default = "default_write_timeout")]
    pub write_timeout: HumanDuration,
}

/// How messages travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP, octet-counting framing (RFC 6587).
    #[default]
    Tcp,
    /// TCP with TLS, octet-counting framing (RFC 5425).
    Tls,
    /// UDP, one message per datagram (RFC 5426).
    Udp,
}

/// What MSG holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    /// The record's `message` (else `line`, else the JSON).
    #[default]
    Message,
    /// The whole record JSON.
    Record,
}

/// Syslog facilities, numbered as in RFC 5424 §6.2.1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Facility {
    Kern = 0,
    #[default]
    User = 1,
    Mail = 2,
    Daemon = 3,
    Auth = 4,
    Syslog = 5,
    Lpr = 6,
    News = 7,
    Uucp = 8,
    Cron = 9,
    Authpriv = 10,
    Ftp = 11,
    Ntp = 12,
    Audit = 13,
    Alert = 14,
    Clock = 15,
    Local0 = 16,
    Local1 = 17,
    Local2 = 18,
    Local3 = 19,
    Local4 = 20,
    Local5 = 21,
    Local6 = 22,
    Local7 = 23,
}

/// Syslog severities, numbered as in RFC 5424 §6.2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Severity {
    /// The severity of a `log_level` (case-insensitive; the common spellings of Python,
    /// log4j, Go and syslog itself), or `None` for an unknown level.
    pub fn from_level(level: &str) -> Option<Self> {
        const TABLE: [(&str, Severity); 18] = [
            ("EMERGENCY", Severity::Emergency),
            ("EMERG", Severity::Emergency),
            ("PANIC", Severity::Emergency),
            ("ALERT", Severity::Alert),
            ("CRITICAL", Severity::Critical),
            ("CRIT", Severity::Critical),
            ("FATAL", Severity::Critical),
            ("ERROR", Severity::Error),
            ("ERR", Severity::Error),
            ("WARNING", Severity::Warning),
            ("WARN", Severity::Warning),
            ("NOTICE", Severity::Notice),
            ("INFO", Severity::Info),
            ("INFORMATION", Severity::Info),
            ("INFORMATIONAL", Severity::Info),
            ("DEBUG", Severity::Debug),
            ("TRACE", Severity::Debug),
            ("VERBOSE", Severity::Debug),
        ];
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(level))
            .map(|&(_, s)| s)
    }
}

fn default_name() -> String {
    "syslog".into()
}
fn default_severity() -> Severity {
    Severity::Notice
}
fn default_sd_id() -> String {
    "log@32473".into()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
/// Below the forwarder's default 8 s grace period, so a stuck server cannot hold shutdown.
fn default_write_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// The RFC 5424 NILVALUE.
const NIL: &str = "-";
/// RFC 5426 §3.2: every receiver must accept this much.
const MIN_MESSAGE_BYTES: u64 = 480;
/// The largest UDP payload over IPv4.
const MAX_UDP_BYTES: u64 = 65_507;

impl SyslogSpec {
    /// Checks values the types cannot; the error names the field (relative to the sink).
    ///
    /// # Errors
    /// `(field, message)` for the first unacceptable value.
    pub fn validate(&self) -> Result<(), FieldError> {
        if split_host_port(&self.address).is_none() {
            return Err(FieldError::new(
                "address",
                format!(
                    "{:?} is not host:port (e.g. rsyslog.logging:514)",
                    self.address
                ),
            ));
        }
        for (field, value, max) in [
            ("hostname", &self.hostname, 255),
            ("app_name", &self.app_name, 48),
            ("proc_id", &self.proc_id, 128),
            ("msg_id", &self.msg_id, 32),
        ] {
            if let Some(value) = value {
                check_header_field(value, max).map_err(|m| FieldError::new(field, m))?;
            }
        }
        check_sd_name(&self.sd_id).map_err(|m| FieldError::new("sd_id", m))?;
        if self.transport != Transport::Tls {
            if self.ca_file.is_some() {
                return Err(FieldError::new("ca_file", "needs transport: tls"));
            }
            if self.server_name.is_some() {
                return Err(FieldError::new("server_name", "needs transport: tls"));
            }
        } else {
            self.tls_config()?;
        }
        let max = self.max_message_bytes();
        if max < MIN_MESSAGE_BYTES {
            return Err(FieldError::new(
                "max_message_bytes",
                format!("must be at least {MIN_MESSAGE_BYTES} (RFC 5426)"),
            ));
        }
        if self.transport == Transport::Udp && max > MAX_UDP_BYTES {
            return Err(FieldError::new(
                "max_message_bytes",
                format!("must be at most {MAX_UDP_BYTES} over UDP (one datagram)"),
            ));
        }
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if timeout.0 < Duration::from_millis(10) {
                return Err(FieldError::new(field, "must be at least 10ms"));
            }
        }
        Ok(())
    }

    fn max_message_bytes(&self) -> u64 {
        match (self.max_message_bytes, self.transport) {
            (Some(size), _) => size.0,
            (None, Transport::Udp) => 2048,
            (None, Transport::Tcp | Transport::Tls) => 8192,
        }
    }
}

fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(())?;
    Some((host, port.parse().ok()?))
}

/// What the sink counts; committed with the forwarder's position (see [`Sink::state`]) so the
/// totals survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct SyslogCounters {
    /// Messages written (TCP: taken by the kernel; UDP: sent).
    records: u64,
    /// Bytes written, framing included.
    bytes: u64,
    /// Batches written.
    batches: u64,
    /// Messages cut to `max_message_bytes`.
    truncated: u64,
    /// Failed attempts (each retried).
    failures: u64,
    /// Connections made (TCP) or sockets opened (UDP).
    connects: u64,
}

/// The syslog sinks' metric families: the shared ones and truncations.
struct Families {
    batch: BatchFamilies,
    truncated: Family<Vec<(String, String)>, Counter>,
}

static METRICS: LazyLock<Families> = LazyLock::new(|| Families {
    batch: BatchFamilies::new("syslog"),
    truncated: Family::default(),
});

/// Registers the syslog sinks' metrics in the forwarder's `registry` (once per registry).
pub fn register_metrics(registry: &mut Registry) {
    METRICS
        .batch
        .register(registry, "Bytes a syslog sink wrote, framing included");
    registry.register(
        "forwarder_syslog_truncated_messages",
        "Messages a syslog sink cut to max_message_bytes",
        METRICS.truncated.clone(),
    );
}

/// The metric handles of one sink.
struct SinkMetrics {
    batch: BatchMetrics,
    truncated: Counter,
}

impl SinkMetrics {
    fn for_sink(name: &str) -> Self {
        Self {
            batch: METRICS.batch.for_sink(name),
            truncated: METRICS
                .truncated
                .get_or_create(&vec![("sink".to_owned(), name.to_owned())])
                .clone(),
        }
    }
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Udp(UdpSocket),
}

/// How often truncation is reported at most.
const TRUNCATION_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Sends records to a syslog server.
pub struct SyslogSink {
    spec: SyslogSpec,
    formatter: Formatter,
    connection: Option<Connection>,
    /// The batch's messages (TCP: framed, one write), reused between batches.
    buf: Vec<u8>,
    /// UDP: where each message ends in `buf`.
    ends: Vec<usize>,
    counters: SyslogCounters,
    failing: bool,
    last_truncation_warning: Option<Instant>,
    metrics: SinkMetrics,
    /// `tls`: the client settings and the server's name.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl SyslogSink {
    /// Prepares the sink; connecting waits for the first batch, so a server that is down does
    /// not keep the forwarder from starting. `saved` restores the counters.
    ///
    /// # Errors
    /// When the TLS settings cannot be made (an unreadable `ca_file`).
    pub fn open(spec: SyslogSpec, saved: Option<&Value>) -> Result<Self, SinkError> {
        let tls = match spec.transport {
            Transport::Tls => Some(spec.tls_config().map_err(|error| SinkError::Io {
                sink: spec.name.clone(),
                path: spec.ca_file.clone().unwrap_or_default(),
                source: io::Error::new(io::ErrorKind::InvalidInput, error),
            })?),
            _ => None,
        };
        let counters = saved
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Ok(Self {
            formatter: Formatter::new(&spec),
            metrics: SinkMetrics::for_sink(&spec.name),
            spec,
            connection: None,
            buf: Vec::with_capacity(64 << 10),
            ends: Vec::new(),
            counters,
            failing: false,
            last_truncation_warning: None,
            tls,
        })
    }

    /// Formats the batch into `buf`; returns how many messages were cut.
    fn encode(&mut self, batch: &[OutRecord<'_>]) -> u64 {
        self.buf.clear();
        self.ends.clear();
        let mut message = Vec::new();
        let mut truncated = 0;
        for record in batch {
            match self.spec.transport {
                Transport::Udp => {
                    truncated += u64::from(self.formatter.format(&mut self.buf, record));
                    self.ends.push(self.buf.len());
                }
                Transport::Tcp | Transport::Tls => {
                    // The length prefix comes first, so format aside, then frame.
                    message.clear();
                    truncated += u64::from(self.formatter.format(&mut message, record));
                    let _ = write!(self.buf, "{} ", message.len());
                    self.buf.extend_from_slice(&message);
                }
            }
        }
        truncated
    }

    /// The connection, made when there is none or (TCP) the server closed it.
    fn connection(&mut self) -> io::Result<&mut Connection> {
        let open = match &mut self.connection {
            Some(Connection::Tcp(stream)) => is_open(stream),
            Some(Connection::Tls(stream)) => is_tls_open(stream),
            _ => true,
        };
        if !open {
            info!(sink = %self.spec.name, address = %self.spec.address, "The syslog server closed the connection; reconnecting.");
            self.connection = None;
        }
        if self.connection.is_none() {
            let connection = connect(&self.spec, self.tls.as_ref())?;
            self.counters.connects += 1;
            info!(sink = %self.spec.name, address = %self.spec.address, transport = ?self.spec.transport, "Connected to the syslog server.");
            self.connection = Some(connection);
        }
        Ok(self
            .connection
            .as_mut()
            .expect("a connection was stored just above"))
    }

    fn write_batch(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let ends = std::mem::take(&mut self.ends);
        let result = self.connection().and_then(|c| match c {
            Connection::Tcp(stream) => stream.write_all(&buf),
            Connection::Tls(stream) => stream.write_all(&buf).and_then(|()| stream.flush()),
            Connection::Udp(socket) => {
                let mut start = 0;
                for &end in &ends {
                    socket.send(&buf[start..end])?;
                    start = end;
                }
                Ok(())
            }
        });
        self.buf = buf;
        self.ends = ends;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn warn_truncation(&mut self) {
        let due = self
            .last_truncation_warning
            .is_none_or(|t| t.elapsed() >= TRUNCATION_WARN_INTERVAL);
        if due {
            self.last_truncation_warning = Some(Instant::now());
            warn!(sink = %self.spec.name, max_message_bytes = self.formatter.max_message_bytes, truncated_total = self.counters.truncated, "Syslog messages longer than max_message_bytes were cut to fit.");
        }
    }
}

/// Whether the server still has the connection open: a closed one reads end-of-file at once.
fn is_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let open = match stream.peek(&mut byte) {
        Ok(0) => false,
        // A syslog server does not talk back; whatever it sent is read and ignored.
        Ok(_) => {
            let mut sink = [0u8; 512];
            let _ = (&*stream).read(&mut sink);
            true
        }
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_ok() && open
}

/// [`is_open`] through TLS: records the server sent are processed (a close_notify or an end
/// of file means closed) without blocking.
fn is_tls_open(stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> bool {
    if stream.sock.set_nonblocking(true).is_err() {
        return false;
    }
    let open = loop {
        match stream.conn.read_tls(&mut stream.sock) {
            Ok(0) => break false,
            Ok(_) => {
                if stream.conn.process_new_packets().is_err() {
                    break false;
                }
                let mut sink = [0u8; 512];
                // Ok(0) is the server's close_notify; data a syslog server sent is ignored.
                if let Ok(0) = stream.conn.reader().read(&mut sink) {
                    break false;
                }
            }
            Err(e) => break e.kind() == io::ErrorKind::WouldBlock,
        }
    };
    stream.sock.set_nonblocking(false).is_ok() && open
}

fn connect(
    spec: &SyslogSpec,
    tls: Option<&(Arc<rustls::ClientConfig>, ServerName<'static>)>,
) -> io::Result<Connection> {
    let addresses: Vec<SocketAddr> = spec.address.to_socket_addrs()?.collect();
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} resolves to no address", spec.address),
    );
    for address in addresses {
        let attempt = match spec.transport {
            Transport::Tcp => TcpStream::connect_timeout(&address, spec.connect_timeout.0)
                .and_then(|s| {
                    s.set_write_timeout(Some(spec.write_timeout.0))?;
                    s.set_nodelay(true)?;
                    Ok(Connection::Tcp(s))
                }),
            Transport::Tls => TcpStream::connect_timeout(&address, spec.connect_timeout.0)
                .and_then(|s| {
                    let (config, name) = tls.expect("a tls sink has its TLS settings");
                    handshake(s, config.clone(), name.clone(), spec)
                }),
            Transport::Udp => {
                let local: SocketAddr = if address.is_ipv4() {
                    "0.0.0.0:0".parse().expect("a valid address")
                } else {
                    "[::]:0".parse().expect("a valid address")
                };
                UdpSocket::bind(local).and_then(|s| {
                    s.connect(address)?;
                    s.set_write_timeout(Some(spec.write_timeout.0))?;
                    Ok(Connection::Udp(s))
                })
            }
        };
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The TLS handshake, bounded by the connect timeout.
fn handshake(
    socket: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    spec: &SyslogSpec,
) -> io::Result<Connection> {
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(spec.connect_timeout.0))?;
    socket.set_write_timeout(Some(spec.connect_timeout.0))?;
    let client = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(client, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    stream.sock.set_read_timeout(None)?;
    stream.sock.set_write_timeout(Some(spec.write_timeout.0))?;
    Ok(Connection::Tls(Box::new(stream)))
}

impl Sink for SyslogSink {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let truncated = self.encode(batch);
        match self.write_batch() {
            Ok(()) => {
                if std::mem::replace(&mut self.failing, false) {
                    info!(sink = %self.spec.name, address = %self.spec.address, "The syslog server takes batches again.");
                }
                self.counters.records += batch.len() as u64;
                self.counters.bytes += self.buf.len() as u64;
                self.counters.batches += 1;
                self.metrics.batch.records.inc_by(batch.len() as u64);
                self.metrics.batch.bytes.inc_by(self.buf.len() as u64);
                self.metrics.batch.batches.inc();
                self.metrics
                    .batch
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                if truncated > 0 {
                    self.metrics.truncated.inc_by(truncated);
                    self.counters.truncated += truncated;
                    self.warn_truncation();
                }
                Ok(())
            }
            Err(source) => {
                if !std::mem::replace(&mut self.failing, true) {
                    warn!(sink = %self.spec.name, address = %self.spec.address, error = %source, "The syslog server did not take the batch; reconnecting and sending it again.");
                }
                self.counters.failures += 1;
                self.metrics.batch.failures.inc();
                Err(SinkError::Io {
                    sink: self.spec.name.clone(),
                    path: PathBuf::from(format!(
                        "syslog {}://{}",
                        match self.spec.transport {
                            Transport::Tcp => "tcp",
                            Transport::Tls => "tls",
                            Transport::Udp => "udp",
                        },
                        self.spec.address
                    )),
                    source,
                })
            }
        }
    }

    fn state(&self) -> Value {
        serde_json::to_value(&self.counters).expect("counters serialise")
    }

    fn close(&mut self) {
        // Tells the server we are done, after what the kernel still holds.
        match self.connection.take() {
            Some(Connection::Tcp(stream)) => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
            Some(Connection::Tls(mut stream)) => {
                stream.conn.send_close_notify();
                let _ = stream.flush();
                let _ = stream.sock.shutdown(std::net::Shutdown::Write);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rfc5424::{is_syslog_timestamp, utf8_prefix_len};
    use super::*;

    fn spec(yaml: &str) -> SyslogSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn format(spec: &SyslogSpec, raw: &str) -> (String, bool) {
        let mut out = Vec::new();
        let cut = Formatter::new(spec).format(&mut out, &OutRecord::decode(raw.as_bytes()));
        (String::from_utf8(out).unwrap(), cut)
    }

    const RECORD: &str = r#"{"id":"00000000000000ab-42","source_file":"access.log","collected_at":"2026-11-22T19:42:24.948Z","log_category":"access","log_level":"WARNING","message":"POST /users -> 400"}"#;

    #[test]
    fn a_record_becomes_an_rfc5424_message() {
        let s = spec("address: h:514\nfacility: local3\nhostname: web-1\n");
        let (text, cut) = format(&s, RECORD);
        assert_eq!(
            text,
            "<156>1 2026-11-22T19:42:24.948Z web-1 access - access [log@32473 id=\"00000000000000ab-42\" source=\"access.log\" level=\"WARNING\"] POST /users -> 400"
        );
        assert!(!cut);
        let s = spec("address: h:514\nhostname: h\napp_name: shop\nproc_id: '17'\nmsg_id: web\nbody: record\nsd_id: rec@99\n");
        let (text, _) = format(&s, RECORD);
        assert_eq!(
            text,
            format!("<12>1 2026-11-22T19:42:24.948Z h shop 17 web [rec@99 id=\"00000000000000ab-42\" source=\"access.log\" level=\"WARNING\"] {RECORD}")
        );
    }

    #[test]
    fn structured_data_values_are_escaped_and_header_fields_sanitised() {
        let s = spec("address: h:514\nhostname: h\n");
        let raw = r#"{"id":"a\"b\\c]d","source_file":"my app.log","log_category":"a b","collected_at":"yesterday","log_level":"nonsense","line":"raw line"}"#;
        let (text, _) = format(&s, raw);
        assert_eq!(
            text,
            "<13>1 - h my_app - a_b [log@32473 id=\"a\\\"b\\\\c\\]d\" source=\"my app.log\" level=\"nonsense\"] raw line"
        );
        let raw = r#"{"id":"x-2","source_file":"app.log","message":{"k":[1,2]},"log_category":7,"line":"the line"}"#;
        let (text, _) = format(&s, raw);
        assert_eq!(
            text,
            "<13>1 - h app - - [log@32473 id=\"x-2\" source=\"app.log\"] the line"
        );
        let (text, _) = format(&s, "not json at all");
        assert_eq!(text, "<13>1 - h - - - - not json at all");
    }

    #[test]
    fn severity_follows_log_level() {
        for (level, severity) in [
            ("ERROR", 3),
            ("error", 3),
            ("WARNING", 4),
            ("warn", 4),
            ("INFO", 6),
            ("DEBUG", 7),
            ("CRITICAL", 2),
            ("FATAL", 2),
            ("NOTICE", 5),
            ("EMERG", 0),
            ("ALERT", 1),
            ("TRACE", 7),
        ] {
            assert_eq!(
                Severity::from_level(level).map(|s| s as u8),
                Some(severity),
                "{level}"
            );
        }
        assert_eq!(Severity::from_level("LOUD"), None);
        let s = spec("address: h:514\nfacility: kern\ndefault_severity: debug\n");
        assert!(format(&s, r#"{"message":"x"}"#).0.starts_with("<7>1 "));
        assert!(format(&s, r#"{"log_level":"ERROR"}"#)
            .0
            .starts_with("<3>1 "));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let s = spec("address: h:514\ntransport: udp\nmax_message_bytes: 480\nhostname: h\n");
        let message = "é".repeat(400);
        let raw = serde_json::json!({"id": "x-1", "message": message}).to_string();
        let (text, cut) = format(&s, &raw);
        assert!(cut);
        assert!(text.len() <= 480 && text.len() >= 479, "{}", text.len());
        assert!(text.ends_with('é'));
        assert_eq!(utf8_prefix_len("aé".as_bytes(), 2), 1);
        assert_eq!(utf8_prefix_len(b"abc", 5), 3);
    }

    #[test]
    fn tcp_frames_are_octet_counted_and_one_buffer() {
        let s = spec("address: h:514\nhostname: h\n");
        let mut sink = SyslogSink::open(s, None).unwrap();
        let records = [
            OutRecord::decode(RECORD.as_bytes()),
            OutRecord::decode(b"zz"),
        ];
        assert_eq!(sink.encode(&records), 0);
        let text = String::from_utf8(sink.buf.clone()).unwrap();
        let (first, rest) = text.split_once(' ').unwrap();
        let len: usize = first.parse().unwrap();
        assert!(rest[..len].starts_with("<12>1 2026-11-22T19:42:24.948Z h access"));
        assert_eq!(&rest[len..], "20 <13>1 - h - - - - zz");
    }

    #[test]
    fn timestamps_are_checked_before_use() {
        assert!(is_syslog_timestamp("2026-11-22T19:42:24.948Z"));
        assert!(is_syslog_timestamp("2026-11-22T19:42:24Z"));
        assert!(is_syslog_timestamp("2026-11-22T19:42:24.123456+01:00"));
        assert!(!is_syslog_timestamp("2026-11-22T19:42:24.1234567Z"));
        assert!(!is_syslog_timestamp("2026-11-22 19:42:24,948"));
        assert!(!is_syslog_timestamp("now"));
    }

    #[test]
    fn validation_names_the_field() {
        let err = |yaml: &str| spec(yaml).validate().unwrap_err();
        assert_eq!(err("address: nohost\n").field, "address");
        assert_eq!(err("address: h:99999\n").field, "address");
        assert_eq!(err("address: h:514\nhostname: 'a b'\n").field, "hostname");
        assert_eq!(err("address: h:514\napp_name: ''\n").field, "app_name");
        assert_eq!(
            err(&format!("address: h:514\nmsg_id: {}\n", "m".repeat(33))).field,
            "msg_id"
        );
        assert_eq!(err("address: h:514\nsd_id: 'a=b'\n").field, "sd_id");
        assert_eq!(
            err("address: h:514\nmax_message_bytes: 100\n").field,
            "max_message_bytes"
        );
        assert_eq!(
            err("address: h:514\ntransport: udp\nmax_message_bytes: 1MiB\n").field,
            "max_message_bytes"
        );
        assert_eq!(
            err("address: h:514\nwrite_timeout: 0s\n").field,
            "write_timeout"
        );
        assert!(serde_saphyr::from_str::<SyslogSpec>("address: h:1\nfacility: local9\n").is_err());
        assert!(serde_saphyr::from_str::<SyslogSpec>("address: h:1\nport: 1\n").is_err());
        spec("address: '[::1]:514'\ntransport: udp\n")
            .validate()
            .unwrap();
    }

    #[test]
    fn a_closed_tcp_connection_is_noticed_before_the_next_batch() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut sink = SyslogSink::open(
            spec(&format!(
                "address: {address}\nhostname: h\nname: reconnecting\n"
            )),
            None,
        )
        .unwrap();
        let record = [OutRecord::decode(RECORD.as_bytes())];
        sink.send(&record).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(server);
        std::thread::sleep(Duration::from_millis(50));
        sink.send(&record).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(sink.state()["connects"], 2);
        let mut registry = Registry::default();
        register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("forwarder_syslog_sent_records_total{sink=\"reconnecting\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("forwarder_syslog_batch_duration_seconds_count{sink=\"reconnecting\"} 2"),
            "{text}"
        );
        drop(sink);
        let mut text = String::new();
        server.read_to_string(&mut text).unwrap();
        assert!(text.contains("POST /users -> 400"), "{text}");
    }
}
