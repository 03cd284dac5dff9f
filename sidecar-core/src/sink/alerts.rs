//! The alerts sink: evaluates the rules file's `alerts:` over the records and delivers what
//! fires and resolves to Alertmanager's v2 API and/or a webhook.
//!
//! Easy to get wrong: a batch offered again after a failed delivery must not be counted
//! twice. `send` evaluates a batch once, remembers which batch that was, and on the offers
//! that follow a failure only retries delivering the outbox; the forwarder commits nothing
//! until `send` succeeds, so a restart evaluates the batch from the last committed state.
//! Notifications made by the clock (`tick`) wait in the state's outbox until delivered, and
//! are committed with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::dead_letter::{DeadLetter, DeadLetterSpec};
use super::network::{
    AuthSpec, BatchSpec, Endpoint, EndpointSpec, Reply, RetrySpec, TimeoutSpec, TlsSpec,
};
use super::owed::BatchId;
use super::{OutRecord, Sink, SinkError};
use crate::alerts::{self, AlertState, Evaluator, Notification};
use crate::backoff::Backoff;
use crate::config::{FieldError, HumanDuration};
use crate::rules::RuleSet;
use crate::signal::CancellationToken;

/// The sink's name in the checkpoint, logs and metrics; no other sink may take it.
pub const ALERTS_SINK_NAME: &str = "alerts";

/// `alerts:` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// The rules file whose `alerts:` are evaluated: the processor's, mounted from the same
    /// ConfigMap.
    pub rules_file: PathBuf,
    /// How often an alert still firing is sent again (default 1m); Alertmanager resolves an
    /// alert it has not heard of for four times this long.
    #[serde(default = "default_resend")]
    pub resend_interval: HumanDuration,
    /// The `generatorURL` of each alert: where a person sees it (default: none).
    #[serde(default)]
    pub generator_url: Option<String>,
    /// Alertmanager's base URL (`http://alertmanager:9093`); alerts go to `/api/v2/alerts`.
    #[serde(default)]
    pub alertmanager: Option<TargetSpec>,
    /// A URL that takes a JSON document per delivery (`{"status", "alerts": [..]}`).
    #[serde(default)]
    pub webhook: Option<TargetSpec>,
}

fn default_resend() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Where alerts go and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The URL.
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Basic or bearer auth.
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// CA and client certificate.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Connect and request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutSpec,
    /// Backoff between retries.
    #[serde(default)]
    pub retry: RetrySpec,
}

/// The two kinds of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Alertmanager,
    Webhook,
}

impl TargetKind {
    fn name(self) -> &'static str {
        match self {
            TargetKind::Alertmanager => "alertmanager",
            TargetKind::Webhook => "webhook",
        }
    }
}

static NO_BATCHING: std::sync::LazyLock<BatchSpec> = std::sync::LazyLock::new(BatchSpec::default);

impl TargetSpec {
    fn endpoint<'a>(&'a self, name: &'a str) -> EndpointSpec<'a> {
        EndpointSpec {
            name,
            url: &self.url,
            headers: self.headers.clone(),
            auth: self.auth.as_ref(),
            tls: &self.tls,
            timeouts: &self.timeouts,
            retry: &self.retry,
            batch: &NO_BATCHING,
            gzip: false,
        }
    }
}

impl AlertsSpec {
    fn targets(&self) -> impl Iterator<Item = (TargetKind, &TargetSpec)> {
        [
            (TargetKind::Alertmanager, self.alertmanager.as_ref()),
            (TargetKind::Webhook, self.webhook.as_ref()),
        ]
        .into_iter()
        .filter_map(|(kind, spec)| spec.map(|spec| (kind, spec)))
    }

    /// Checks the targets and the rules file; the error names the field under `alerts`.
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.resend_interval.0 < Duration::from_secs(1) {
            return Err(FieldError::new("resend_interval", "must be at least 1s"));
        }
        for (kind, spec) in self.targets() {
            spec.endpoint(kind.name())
                .validate()
                .map_err(|e| e.under(kind.name()))?;
        }
        if let Some(url) = &self.generator_url {
            Url::parse(url)
                .map_err(|e| FieldError::new("generator_url", format!("{url:?}: {e}")))?;
        }
        RuleSet::load(&self.rules_file)
            .map_err(|e| FieldError::new("rules_file", e.to_string()))?;
        Ok(())
    }

    /// Builds the sink from the committed `saved` state.
    ///
    /// # Errors
    /// When the rules file, a target or the dead-letter journal cannot be set up.
    pub fn build(
        &self,
        dead_letter: &DeadLetterSpec,
        saved: Option<&Value>,
    ) -> Result<AlertSink, SinkError> {
        let setup = |source: Box<dyn std::error::Error + Send + Sync>| SinkError::Setup {
            sink: ALERTS_SINK_NAME.to_owned(),
            source,
        };
        let rules = RuleSet::load(&self.rules_file).map_err(|e| setup(Box::new(e)))?;
        let cancel = CancellationToken::new();
        let mut targets = Vec::new();
        for (kind, spec) in self.targets() {
            let name = format!("{ALERTS_SINK_NAME}-{}", kind.name());
            let endpoint = Endpoint::new(&spec.endpoint(&name))
                .map_err(|e| setup(Box::new(e)))?
                .with_cancel(cancel.clone());
            let mut url = endpoint.url().clone();
            if kind == TargetKind::Alertmanager {
                let base = url.path().trim_end_matches('/').to_owned();
                url.set_path(&format!("{base}/api/v2/alerts"));
            }
            targets.push(Target {
                kind,
                endpoint,
                url,
                backoff: Backoff::new(spec.retry.initial_backoff.0, spec.retry.max_backoff.0),
            });
        }
        let names: BTreeSet<String> = targets.iter().map(|t| t.kind.name().to_owned()).collect();
        let evaluator = Evaluator::new(Arc::new(rules), names);
        let state = evaluator.restore(saved, alerts::now_ms());
        let sink = AlertSink {
            evaluator,
            state,
            delivery: Delivery {
                targets,
                dead_letter: DeadLetter::open(ALERTS_SINK_NAME, dead_letter)?,
                resend: self.resend_interval,
                generator_url: self.generator_url.clone().unwrap_or_default(),
                retry_after: None,
            },
            cancel,
            retry_at: None,
            evaluated: None,
        };
        sink.publish(&[]);
        Ok(sink)
    }
}

/// One place alerts go.
struct Target {
    kind: TargetKind,
    endpoint: Endpoint,
    url: Url,
    backoff: Backoff,
}

/// Evaluates alerts and delivers their notifications.
pub struct AlertSink {
    evaluator: Evaluator,
    state: AlertState,
    delivery: Delivery,
    cancel: CancellationToken,
    /// After a failed delivery from `tick`: not before then.
    retry_at: Option<Instant>,
    /// The batch already counted into `state` whose notifications are not all delivered.
    evaluated: Option<BatchId>,
}

/// The targets and what delivering to them needs.
struct Delivery {
    targets: Vec<Target>,
    dead_letter: DeadLetter,
    resend: HumanDuration,
    generator_url: String,
    /// After a failure: the delay the failed targets ask for.
    retry_after: Option<Duration>,
}

impl Delivery {
    /// Delivers the outbox of `state` to every target that still owes a notification.
    /// Targets that refuse for good have the notifications dead-lettered.
    fn deliver(&mut self, state: &mut AlertState) -> Result<(), SinkError> {
        let mut failure = None;
        self.retry_after = None;
        for target in &mut self.targets {
            let name = target.kind.name();
            let owed: Vec<&Notification> = state
                .outbox
                .iter()
                .filter(|o| o.targets.contains(name))
                .map(|o| &o.notification)
                .collect();
            if owed.is_empty() {
                continue;
            }
            let body = encode(target.kind, &owed, &self.generator_url, self.resend);
            match target.endpoint.post(&target.url, "application/json", body) {
                // (Partial comes from a protocol's review, never from the endpoint itself.)
                Reply::Accepted(_) | Reply::Partial(_) => {
                    target.backoff.reset();
                }
                Reply::Refused { status, reason } => {
                    error!(target = name, url = target.endpoint.shown_url(), status, reason = %reason, alerts = owed.len(), "The alert target refused the alerts for good; they are kept in the dead-letter journal.");
                    let texts: Vec<String> = owed
                        .iter()
                        .map(|n| serde_json::to_string(n).expect("serialises"))
                        .collect();
                    let records: Vec<OutRecord<'_>> = texts
                        .iter()
                        .map(|t| OutRecord::decode(t.as_bytes()))
                        .collect();
                    let refused: Vec<(usize, u16, String)> = (0..records.len())
                        .map(|i| (i, status, reason.clone()))
                        .collect();
                    let sink = format!("{ALERTS_SINK_NAME}-{name}");
                    self.dead_letter.keep(&sink, &records, &refused)?;
                }
                Reply::Unavailable {
                    reason,
                    retry_after,
                } => {
                    let delay = match retry_after {
                        Some(after) => target.backoff.server_delay(after),
                        None => target.backoff.next_delay(),
                    };
                    self.retry_after = Some(self.retry_after.map_or(delay, |d| d.min(delay)));
                    failure = Some(SinkError::Unavailable {
                        sink: ALERTS_SINK_NAME.to_owned(),
                        url: target.endpoint.shown_url().to_owned(),
                        owed: owed.len(),
                        reason,
                    });
                    continue;
                }
            }
            for outgoing in &mut state.outbox {
                outgoing.targets.remove(name);
            }
        }
        state.outbox.retain(|o| !o.targets.is_empty());
        failure.map_or(Ok(()), Err)
    }
}

impl AlertSink {
    /// Shows the state on the board and in the metrics; `changes` are the notifications the
    /// last evaluation made.
    fn publish(&self, changes: &[Notification]) {
        let firing = self.evaluator.firing(&self.state);
        let rules = self.evaluator.rules().alerts().iter().map(|r| r.name());
        alerts::publish(rules, firing, changes);
    }

    /// Logs the alerts that began firing or resolved (not the ones sent again).
    fn log_changes(before: &[Notification], changes: &[Notification]) {
        for change in changes {
            let name = change.display_name();
            let summary = change.annotations.get("summary").map_or("", String::as_str);
            match change.resolved_ms {
                Some(at) => {
                    info!(alert = %name, resolved_at = %alerts::format_ms(at), "Alert resolved.")
                }
                None if !before.iter().any(|b| b.labels == change.labels) => {
                    warn!(alert = %name, since = %alerts::format_ms(change.starts_ms), summary, "Alert firing.");
                }
                None => {}
            }
        }
    }
}

impl Sink for AlertSink {
    fn name(&self) -> &str {
        ALERTS_SINK_NAME
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        let id = BatchId::of(batch);
        if self.evaluated != Some(id) {
            let before = self.evaluator.firing(&self.state);
            let known = self.state.outbox.len();
            self.evaluator.observe(&mut self.state, batch);
            if self.state.outbox.len() > known {
                let changes: Vec<Notification> = self.state.outbox[known..]
                    .iter()
                    .map(|o| o.notification.clone())
                    .collect();
                Self::log_changes(&before, &changes);
                self.publish(&changes);
            }
            self.evaluated = Some(id);
        }
        if !self.state.outbox.is_empty() {
            self.delivery.deliver(&mut self.state)?;
        }
        self.evaluated = None;
        Ok(())
    }

    fn state(&self) -> Value {
        serde_json::to_value(&self.state).expect("alert state serialises")
    }

    /// Windows close, notifications repeat and failed deliveries are retried on the clock:
    /// looked at every second, as the forwarder's loop did before it could wait longer.
    fn tick_due_in(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn tick(&mut self) {
        let before = self.evaluator.firing(&self.state);
        let known = self.state.outbox.len();
        self.evaluator
            .advance(&mut self.state, alerts::now_ms(), self.delivery.resend);
        let changes: Vec<Notification> = self.state.outbox[known..]
            .iter()
            .map(|o| o.notification.clone())
            .collect();
        if !changes.is_empty() {
            Self::log_changes(&before, &changes);
            self.publish(&changes);
        }
        if self.state.outbox.is_empty() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match self.delivery.deliver(&mut self.state) {
            Ok(()) => self.retry_at = None,
            Err(e) => {
                let delay = self.delivery.retry_after.unwrap_or(Duration::from_secs(1));
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Alert delivery failed; retrying.");
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }

    fn retry_delay(&self) -> Option<Duration> {
        self.delivery.retry_after
    }

    fn cancel_handle(&self) -> Option<CancellationToken> {
        Some(self.cancel.clone())
    }
}

/// The request body for `kind`: Alertmanager's v2 list of alerts, or the webhook document.
fn encode(
    kind: TargetKind,
    owed: &[&Notification],
    generator_url: &str,
    resend: HumanDuration,
) -> Vec<u8> {
    // Alertmanager resolves by itself an alert not heard of until `endsAt`: four resend
    // intervals, as Prometheus does, so one lost re-send does not resolve it.
    let valid_until = alerts::now_ms() + 4 * resend.0.as_millis() as i64;
    let alerts: Vec<Value> = owed
        .iter()
        .map(|n| {
            let mut alert = json!({
                "labels": n.labels,
                "annotations": n.annotations,
                "startsAt": alerts::format_ms(n.starts_ms),
                "endsAt": alerts::format_ms(n.resolved_ms.unwrap_or(valid_until)),
            });
            if !generator_url.is_empty() {
                alert["generatorURL"] = json!(generator_url);
            }
            if kind == TargetKind::Webhook {
                alert["status"] = json!(n.status());
            }
            alert
        })
        .collect();
    let body = match kind {
        TargetKind::Alertmanager => Value::Array(alerts),
        TargetKind::Webhook => {
            let status = if owed.iter().any(|n| n.resolved_ms.is_none()) {
                "firing"
            } else {
                "resolved"
            };
            json!({"version": "1", "sender": "log-forwarder", "status": status, "alerts": alerts})
        }
    };
    serde_json::to_vec(&body).expect("alerts serialise")
}
