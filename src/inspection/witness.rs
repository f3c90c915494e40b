//! What inspection keeps for later: evidence entries of inconsistent records and capture lines
//! of inspected responses, both redacted. Called after the verdict, never on its way: nothing
//! here changes what is sent, and nothing here waits.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};

use crate::capture::{Capture, CaptureLine};
use crate::engine::{Field, RecordState, RecordVerdict, TransitionFinding, TransitionJudge};
use crate::evidence::{Entry, EvidenceBook, Seen};
use crate::redact::Redactor;
use crate::settings::Settings;

/// The judge the engine sees on a tracked route: the task memory, and a note of what it
/// compared a record with whenever a transition rule fired.
pub(super) struct Witness<'a> {
    pub inner: &'a mut dyn TransitionJudge,
    /// (task id, what the memory held before), for records a transition rule fired on.
    pub priors: Vec<(String, RecordState)>,
}

/// The keepers of one configuration: the shared evidence and capture, and how to redact.
#[derive(Debug)]
pub(super) struct Keepers {
    pub evidence: Arc<EvidenceBook>,
    pub capture: Option<Arc<Capture>>,
    pub redactor: Arc<Redactor>,
    pub instance: Arc<str>,
    pub whole_bodies: bool,
    pub max_body_bytes: usize,
    /// Per configured route, the task fields its redaction hides.
    pub redacted: Vec<Vec<Field>>,
}

/// One inspected response, as the keepers need it.
pub(super) struct Inspected<'a> {
    pub route: usize,
    pub name: &'a Arc<str>,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub status: StatusCode,
    pub content_type: &'a str,
    /// The body as received, its content coding undone.
    pub decoded: &'a Bytes,
    pub records: &'a [RecordVerdict],
    pub priors: &'a [(String, RecordState)],
}

// === impl Witness ===

impl TransitionJudge for Witness<'_> {
    fn judge(&mut self, task_id: &str, state: &RecordState) -> Vec<TransitionFinding> {
        let findings = self.inner.judge(task_id, state);
        if !findings.is_empty() {
            if let Some(prior) = self.inner.compared_with() {
                self.priors.push((task_id.to_owned(), prior));
            }
        }
        findings
    }

    fn remember(&mut self, task_id: &str, sent: &RecordState) {
        self.inner.remember(task_id, sent);
    }

    fn compared_with(&self) -> Option<RecordState> {
        self.inner.compared_with()
    }
}

// === impl Keepers ===

impl Keepers {
    pub fn new(
        settings: &Settings,
        evidence: Arc<EvidenceBook>,
        capture: Option<Arc<Capture>>,
    ) -> Keepers {
        let config = &settings.config;
        let redactor = settings.redactor.clone();
        let redacted = config
            .routes
            .iter()
            .map(|route| redactor.task_fields(&route.fields.apply(&config.fields)))
            .collect();
        Keepers {
            evidence,
            capture,
            redactor,
            instance: Arc::from(instance_name(&config.evidence.instance)),
            whole_bodies: config.evidence.whole_bodies,
            max_body_bytes: config.evidence.max_body_bytes,
            redacted,
        }
    }

    /// The task fields redacted on configured route `route`.
    pub fn redacted(&self, route: usize) -> &[Field] {
        self.redacted.get(route).map_or(&[], Vec::as_slice)
    }

    /// Keeps the evidence of the response's inconsistent records, and its capture line.
    pub fn keep(&self, seen: &Inspected<'_>) {
        let inconsistent = seen.records.iter().any(|r| !r.issues.is_empty());
        if inconsistent && self.evidence.keeps() {
            self.keep_evidence(seen);
        }
        if let Some(capture) = &self.capture {
            if capture.wants(inconsistent) {
                capture.offer(&self.capture_line(seen, inconsistent));
            }
        }
    }

    fn keep_evidence(&self, seen: &Inspected<'_>) {
        let path = path_of(seen.uri);
        let body = self.whole_bodies.then(|| {
            let text = self.redactor.body(seen.decoded);
            cut(&text, self.max_body_bytes)
        });
        let at = Seen {
            route: seen.name,
            method: seen.method.as_str(),
            path: &path,
            instance: &self.instance,
            redactor: &self.redactor,
            redacted: self.redacted(seen.route),
            body: body.as_ref().map(|(text, cut)| (text.as_str(), *cut)),
        };
        for record in seen.records.iter().filter(|r| !r.issues.is_empty()) {
            let prior = record.task_id.as_deref().and_then(|id| {
                seen.priors
                    .iter()
                    .find(|(task, _)| task == id)
                    .map(|(_, prior)| prior)
            });
            self.evidence.keep(Entry::new(&at, record, prior));
        }
    }

    fn capture_line(&self, seen: &Inspected<'_>, inconsistent: bool) -> CaptureLine {
        let (body, encoding) = if !self.redactor.is_empty() {
            (self.redactor.body(seen.decoded).into_owned(), None)
        } else {
            match std::str::from_utf8(seen.decoded) {
                Ok(text) => (text.to_owned(), None),
                Err(_) => {
                    use base64::Engine;
                    let text = base64::engine::general_purpose::STANDARD.encode(seen.decoded);
                    (text, Some("base64".to_owned()))
                }
            }
        };
        CaptureLine {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            route: seen.name.to_string(),
            method: seen.method.as_str().to_owned(),
            path: path_of(seen.uri),
            status: seen.status.as_u16(),
            content_type: seen.content_type.to_owned(),
            task_id: seen.records.iter().find_map(|r| r.task_id.clone()),
            body,
            encoding,
            inconsistent,
        }
    }
}

fn path_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// `text` cut to at most `max` bytes on a character boundary, and whether it was cut.
fn cut(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_owned(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// `evidence.instance`, or the host name when it is empty.
fn instance_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
