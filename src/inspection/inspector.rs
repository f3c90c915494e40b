//! The inspector: decides whether a response is worth inspecting, holds its body within the
//! limits, runs the engine, counts and logs what it found, and rebuilds the response.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prometheus::Registry;

use super::accept::ClientCodings;
use super::body::InspectBody;
use super::budget::{Budget, Reservation};
use super::issue_log::RouteIssueLog;
use super::metrics::{InspectionFamilies, InspectionMetrics, RouteCounters, RouteLabels, Skip};
use super::witness::{Inspected, Keepers, Witness};
use super::BoxError;
use crate::capture::{Capture, CaptureCounters};
use crate::coding::{Coding, DecodeError};
use crate::engine::{
    self, Fix, Inspection, NoMemory, Outcome, RecordVerdict, RouteSpec, RuleMode, RuleSet,
};
use crate::evidence::EvidenceBook;
use crate::report::ReportBook;
use crate::settings::Settings;
use crate::tracker::{self, MemoryRoute, StoreMetrics, TaskMemory, TrackerCollector};

/// Headers that vouch for the exact bytes of a body; a patched body must not carry them.
static BODY_DIGESTS: [HeaderName; 4] = [
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

/// The response header naming the rules whose fixes were applied (off unless configured).
pub const FIXED_HEADER: &str = "x-consistency-fixed";

/// The response header naming the rules in shadow that would have fixed the response (off
/// unless configured).
pub const SHADOW_HEADER: &str = "x-consistency-shadow";

/// What outlives one configuration: the metric families, the task memory, the report book and
/// the budget of held bytes. A reload builds a new [`Inspector`] over the same state.
#[derive(Debug, Clone)]
pub struct InspectionState {
    families: InspectionFamilies,
    pub memory: Arc<TaskMemory>,
    pub book: Arc<ReportBook>,
    budget: Budget,
    /// The newest inconsistent records per route and rule.
    pub evidence: Arc<EvidenceBook>,
    /// The capture writer, started once when `capture.enabled`.
    capture: Option<Arc<Capture>>,
}

/// Everything inspection needs under one configuration, shared by every connection.
#[derive(Debug)]
pub struct Inspector {
    routes: Vec<InspectedRoute>,
    rules: Arc<RuleSet>,
    memory: Arc<TaskMemory>,
    metrics: InspectionMetrics,
    book: Arc<ReportBook>,
    budget: Budget,
    max_body_bytes: usize,
    max_decoded_bytes: usize,
    narrow_accept_encoding: bool,
    fixed_header: bool,
    shadow_header: bool,
    keepers: Keepers,
}

#[derive(Debug)]
struct InspectedRoute {
    name: Arc<str>,
    spec: RouteSpec,
    /// None: the route is not tracked.
    memory: Option<MemoryRoute>,
    log: RouteIssueLog,
}

/// What was read of a body while deciding.
enum Held<B> {
    /// The whole body (and its trailers).
    Complete(Bytes, Option<HeaderMap>),
    /// The limit or the global budget was passed: what was read, the unread rest, and which.
    Overflow(VecDeque<Frame<Bytes>>, B, Skip),
    /// The upstream failed mid-body: what was read, and the failure.
    Failed(VecDeque<Frame<Bytes>>, BoxError),
}

// === impl InspectionState ===

impl InspectionState {
    /// Registers the consistency and tracker metrics, and creates the task memory, the report
    /// book and the budget of held bytes.
    pub fn new(settings: &Settings, registry: &Registry) -> prometheus::Result<InspectionState> {
        let config = &settings.config;
        let memory = Arc::new(TaskMemory::new(settings, StoreMetrics::register(registry)?));
        TrackerCollector::register(registry, memory.clone())?;
        let families = InspectionFamilies::register(registry)?;
        let book = ReportBook::new(config.inspect.recent_issues, families.tallies());
        Ok(InspectionState {
            families,
            memory,
            book: Arc::new(book),
            budget: Budget::new(config.inspect.max_held_bytes),
            evidence: Arc::new(EvidenceBook::new(
                config.evidence.entries_per_rule,
                config.evidence.bytes_per_rule,
            )),
            capture: Capture::start(&config.capture, CaptureCounters::register(registry)?)
                .map(Arc::new),
        })
    }
}

// === impl Inspector ===

impl Inspector {
    /// Compiles the per-route state of one configuration over the state that outlives it.
    pub fn new(settings: &Settings, state: &InspectionState) -> Inspector {
        let config = &settings.config;
        let memory = state.memory.clone();
        let tracked = memory.configure(settings);
        let transition_labels = tracker::rule_labels(&config.tracker);
        let labels: Vec<RouteLabels<'_>> = settings
            .routes
            .iter()
            .map(|route| RouteLabels {
                name: route.name(),
                rules: settings
                    .rules
                    .labels()
                    .chain(
                        transition_labels
                            .iter()
                            .copied()
                            .filter(|_| route.spec().track()),
                    )
                    .collect(),
            })
            .collect();
        let metrics = InspectionMetrics::resolve(&state.families, &labels);
        let routes = settings
            .routes
            .iter()
            .zip(tracked)
            .map(|(route, memory)| InspectedRoute {
                name: Arc::from(route.name()),
                spec: route.spec().clone(),
                memory,
                log: RouteIssueLog::new(
                    route.name(),
                    config.inspect.log_window,
                    config.inspect.log_burst,
                ),
            })
            .collect();
        Inspector {
            routes,
            rules: settings.rules.clone(),
            memory,
            metrics,
            book: state.book.clone(),
            budget: state.budget.clone(),
            max_body_bytes: config.inspect.max_body_bytes,
            max_decoded_bytes: config.inspect.max_decoded_bytes,
            narrow_accept_encoding: config.inspect.narrow_accept_encoding,
            fixed_header: config.inspect.fixed_header,
            shadow_header: config.inspect.shadow_header,
            keepers: Keepers::new(settings, state.evidence.clone(), state.capture.clone()),
        }
    }

    /// Whether requests on inspected routes ask the upstream only for codings we read.
    pub fn narrows_accept_encoding(&self) -> bool {
        self.narrow_accept_encoding
    }

    /// Periodic upkeep, from one task only: forgets expired tasks, and logs the summaries of
    /// issue-log windows that have ended.
    pub fn tick(&self) {
        self.memory.maintain();
        for route in &self.routes {
            route.log.flush();
        }
    }

    /// Inspects the response of configured route `route` to a `method` request for `uri` from
    /// a client that accepts `client`'s codings.
    pub async fn respond<B>(
        self: Arc<Self>,
        route: usize,
        method: &Method,
        uri: &Uri,
        client: ClientCodings,
        mut response: Response<B>,
    ) -> Response<InspectBody<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (Some(target), Some(counters)) = (self.routes.get(route), self.metrics.route(route))
        else {
            return response.map(InspectBody::passthrough);
        };
        let status = response.status();
        // Only a successful response with a body carries a status record.
        if *method == Method::HEAD || !status.is_success() || matches!(status.as_u16(), 204..=206) {
            return response.map(InspectBody::passthrough);
        }
        let skip = |reason: Skip, response: Response<B>| {
            counters.skip(reason);
            tracing::debug!(route = %target.name, reason = reason.as_str(), "response not inspected");
            response.map(InspectBody::passthrough)
        };
        if !is_json(response.headers()) {
            return skip(Skip::NotJson, response);
        }
        if declared_length(response.headers()).is_some_and(|n| n > self.max_body_bytes as u64) {
            return skip(Skip::TooLarge, response);
        }
        let Some(coding) = Coding::from_header(
            response
                .headers()
                .get(header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok()),
        ) else {
            return skip(Skip::Encoding, response);
        };
        if coding != Coding::Identity {
            // Its coding was negotiated; a cache must not serve it to a client that cannot read it.
            vary_on_accept_encoding(response.headers_mut());
        }

        let (mut head, body) = response.into_parts();
        // Held bytes count against the global budget until the client has them.
        let mut reservation = self.budget.reservation();
        let (raw, trailers) = match hold(body, self.max_body_bytes, &mut reservation).await {
            Held::Complete(raw, trailers) => (raw, trailers),
            Held::Overflow(held, rest, reason) => {
                counters.skip(reason);
                let body = InspectBody::replay(held, Some(rest), None).holding(reservation);
                return Response::from_parts(head, body);
            }
            Held::Failed(held, failure) => {
                let body = InspectBody::replay(held, None, Some(failure)).holding(reservation);
                return Response::from_parts(head, body);
            }
        };
        let replay = |head: http::response::Parts,
                      raw: Bytes,
                      trailers: Option<HeaderMap>,
                      reservation: Reservation| {
            let mut held = VecDeque::with_capacity(2);
            if !raw.is_empty() {
                held.push_back(Frame::data(raw));
            }
            if let Some(trailers) = trailers {
                held.push_back(Frame::trailers(trailers));
            }
            let body = InspectBody::replay(held, None, None).holding(reservation);
            let body = if head.headers.contains_key(header::CONTENT_LENGTH) {
                body
            } else {
                body.without_length()
            };
            Response::from_parts(head, body)
        };

        if coding != Coding::Identity && !reservation.cover(raw.len() + self.max_decoded_bytes) {
            counters.skip(Skip::Overloaded);
            return replay(head, raw, trailers, reservation);
        }
        let (decoded, coding) = match coding.decode(&raw, self.max_decoded_bytes) {
            Ok(decoded) => decoded,
            Err(err) => {
                let reason = match err {
                    DecodeError::TooLarge => Skip::TooLarge,
                    DecodeError::Corrupt => Skip::Unparseable,
                };
                counters.skip(reason);
                return replay(head, raw, trailers, reservation);
            }
        };

        let Some((inspection, priors)) = self.run_engine(target, &decoded).await else {
            counters.skip(Skip::Error);
            return replay(head, raw, trailers, reservation);
        };
        let records = match &inspection.outcome {
            Outcome::Skipped(reason) => {
                let skip = match reason {
                    engine::SkipReason::Unparseable => Skip::Unparseable,
                    engine::SkipReason::NoRecord => Skip::NoRecord,
                };
                counters.skip(skip);
                return replay(head, raw, trailers, reservation);
            }
            Outcome::Checked(records) => records,
        };
        self.account(route, target, counters, records);
        self.keepers.keep(&Inspected {
            route,
            name: &target.name,
            method,
            uri,
            status,
            content_type: head
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            decoded: &decoded,
            records,
            priors: &priors,
        });
        if self.shadow_header {
            // Whether or not the body changed: the rules in shadow changed nothing either way.
            name_rules(&mut head.headers, SHADOW_HEADER, records, |r| {
                &r.shadow_fixes
            });
        }

        let unchanged =
            inspection.body.len() == decoded.len() && inspection.body.as_ptr() == decoded.as_ptr();
        if unchanged {
            return replay(head, raw, trailers, reservation);
        }
        let sent_as = client.reencode_as(coding);
        let patched = match sent_as.encode(&inspection.body) {
            Ok(patched) => patched,
            Err(err) => {
                tracing::warn!(route = %target.name, error = %err, "re-encoding a patched body failed; sending the original");
                counters.skip(Skip::Error);
                return replay(head, raw, trailers, reservation);
            }
        };
        if sent_as.token() != coding.token() {
            set_coding(&mut head.headers, sent_as);
        }
        rewrite_head(
            &mut head.headers,
            patched.len(),
            self.fixed_header.then_some(records),
        );
        replay(head, patched, trailers, reservation)
    }

    /// Runs the engine (twice with a shared task store, around its round trip); a panic
    /// inside it is caught, logged and reported as `None`. Beside the inspection, what the
    /// task memory held before each record a transition rule fired on.
    async fn run_engine(
        &self,
        target: &InspectedRoute,
        body: &Bytes,
    ) -> Option<(Inspection, Vec<(String, engine::RecordState)>)> {
        // Time in the engine only: the store's round trip is not inspection work.
        let mut engine_time = Duration::ZERO;
        let mut inspect = |judge: &mut dyn engine::TransitionJudge| {
            let started = Instant::now();
            let mut witness = Witness {
                inner: judge,
                priors: Vec::new(),
            };
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                engine::inspect(&self.rules, &target.spec, body, &mut witness)
            }));
            engine_time += started.elapsed();
            result.map(|inspection| (inspection, witness.priors))
        };
        let result = match &target.memory {
            Some(route) => self.memory.judged(route, &mut inspect).await,
            None => inspect(&mut NoMemory),
        };
        self.metrics.duration.observe(engine_time.as_secs_f64());
        match result {
            Ok(inspection) => Some(inspection),
            Err(_) => {
                tracing::error!(route = %target.name, "inspection panicked; response passed through unchanged");
                None
            }
        }
    }

    /// Counts, logs and reports the verdicts of one body; logged and reported values redacted.
    fn account(
        &self,
        route: usize,
        target: &InspectedRoute,
        counters: &RouteCounters,
        records: &[RecordVerdict],
    ) {
        let redacted = self.keepers.redacted(route);
        for record in records {
            let record = &*self.keepers.redactor.verdict(redacted, record);
            counters.checks.inc();
            counters.results[record.level as usize].inc();
            if record.task_id_too_long {
                counters.untracked_task_id_too_long.inc();
            }
            let task_id = record.task_id.as_deref().unwrap_or("-");
            for issue in &record.issues {
                counters.issue(&issue.rule, issue.level);
                let fixes = if issue.shadow {
                    &record.shadow_fixes
                } else {
                    &record.fixes
                };
                let fix = fixes.iter().find(|fix| fix.rule == issue.rule);
                target.log.issue(task_id, issue, fix);
            }
            for fix in &record.fixes {
                counters.fix(&fix.rule, RuleMode::Fix);
            }
            for fix in &record.shadow_fixes {
                counters.fix(&fix.rule, RuleMode::Shadow);
            }
            self.book.record(&target.name, record);
        }
        counters.update_ratio();
    }
}

/// Reads the body until its end, past `limit` bytes, or past what the budget can cover,
/// whichever comes first.
async fn hold<B>(mut body: B, limit: usize, reservation: &mut Reservation) -> Held<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut read = 0usize;
    let mut trailers = None;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(err)) => return Held::Failed(frames, err.into()),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                }
                match frame.into_trailers() {
                    Ok(t) => trailers = Some(t),
                    Err(frame) => frames.push_back(frame),
                }
                let overflow = if read > limit {
                    Some(Skip::TooLarge)
                } else if !reservation.cover(read) {
                    Some(Skip::Overloaded)
                } else {
                    None
                };
                if let Some(reason) = overflow {
                    if let Some(t) = trailers.take() {
                        frames.push_back(Frame::trailers(t));
                    }
                    return Held::Overflow(frames, body, reason);
                }
            }
        }
    }
    let data: Vec<Bytes> = frames
        .into_iter()
        .filter_map(|f| f.into_data().ok())
        .collect();
    let whole = match data.len() {
        0 => Bytes::new(),
        1 => data.into_iter().next().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(read);
            for chunk in data {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    };
    Held::Complete(whole, trailers)
}

/// `application/json` or any `+json` type, parameters aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Names the coding a re-encoded body went out in, which the client's `Accept-Encoding` chose.
fn set_coding(headers: &mut HeaderMap, coding: Coding) {
    match coding {
        Coding::Identity => {
            headers.remove(header::CONTENT_ENCODING);
        }
        _ => {
            headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(coding.token()),
            );
        }
    }
    vary_on_accept_encoding(headers);
}

/// Adds `Accept-Encoding` to `Vary` unless it, or `*`, is listed already.
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let listed = headers.get_all(header::VARY).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|name| {
            let name = name.trim_ascii();
            name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Headers of a patched response: its new length, a weak ETag, no digests of the old bytes.
fn rewrite_head(headers: &mut HeaderMap, length: usize, fixed: Option<&[RecordVerdict]>) {
    if headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Some(etag) = headers.get(header::ETAG) {
        // The representation changed, so a strong validator no longer holds; a weak one does.
        let weak = match etag.as_bytes() {
            [b'W', b'/', ..] => None,
            strong => {
                let mut value = b"W/".to_vec();
                value.extend_from_slice(strong);
                HeaderValue::from_bytes(&value).ok()
            }
        };
        match weak {
            Some(weak) => {
                headers.insert(header::ETAG, weak);
            }
            None if etag.as_bytes().starts_with(b"W/") => {}
            None => {
                headers.remove(header::ETAG);
            }
        }
    }
    // Rarely sent: one pass over the names rather than a lookup per digest.
    let digests: Vec<HeaderName> = headers
        .keys()
        .filter(|name| BODY_DIGESTS.contains(name))
        .cloned()
        .collect();
    for name in digests {
        headers.remove(name);
    }
    if let Some(records) = fixed {
        name_rules(headers, FIXED_HEADER, records, |r| &r.fixes);
    }
}

/// Sets `header` to the names of the rules of the fixes `of` picks, sorted and once each;
/// nothing when there are none.
fn name_rules(
    headers: &mut HeaderMap,
    header: &'static str,
    records: &[RecordVerdict],
    of: impl Fn(&RecordVerdict) -> &[Fix],
) {
    let mut rules: Vec<&str> = records
        .iter()
        .flat_map(|r| of(r).iter().map(|f| &*f.rule))
        .collect();
    if rules.is_empty() {
        return;
    }
    rules.sort_unstable();
    rules.dedup();
    if let Ok(value) = HeaderValue::from_str(&rules.join(",")) {
        headers.insert(header, value);
    }
}

#[cfg(test)]
mod tests;
