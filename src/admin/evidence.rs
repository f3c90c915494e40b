//! `GET /evidence` and `GET /tasks/{id}`: from an issue to the records behind it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::evidence::Query;
use crate::redact::number_text;
use crate::stack::Sidecar;
use crate::tracker::TaskView;

/// Entries listed when `limit` is not given, and the most ever listed.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// `GET /evidence?route=&rule=&task=&limit=`: the newest matching entries first.
pub(super) fn evidence(sidecar: &Sidecar, query: Option<&str>) -> Response<Full<Bytes>> {
    let mut wanted = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    for (key, value) in pairs(query.unwrap_or("")) {
        match key.as_str() {
            "route" => wanted.route = Some(value),
            "rule" => wanted.rule = Some(value),
            "task" => wanted.task = Some(value),
            "limit" => match value.parse::<usize>() {
                Ok(n) => wanted.limit = n.min(MAX_LIMIT),
                Err(_) => return error(StatusCode::BAD_REQUEST, "limit: expected a whole number"),
            },
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown parameter {key:?}: route, rule, task, limit"),
                )
            }
        }
    }
    let entries = sidecar.evidence().find(&wanted);
    let (held, bytes) = sidecar.evidence().held();
    json_response(
        StatusCode::OK,
        &json!({
            "query": {
                "route": wanted.route,
                "rule": wanted.rule,
                "task": wanted.task,
                "limit": wanted.limit,
            },
            "held": { "entries": held, "bytes": bytes },
            "entries": entries,
        }),
    )
}

/// `GET /tasks/{id}`: per tracked route, what the task memory holds (with Redis, the shared
/// memory) and its times, and the task's evidence. 404 when neither knows the task.
pub(super) async fn task(sidecar: &Sidecar, id: &str) -> Response<Full<Bytes>> {
    let Some(id) = decode(id).filter(|id| !id.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "expected /tasks/{id}");
    };
    let memory = sidecar.memory();
    let mut known = Vec::new();
    for route in memory.local().route_names() {
        if let Some(view) = memory.task(&route, &id).await {
            known.push(view_json(&view));
        }
    }
    let entries = sidecar.evidence().find(&Query {
        task: Some(id.clone()),
        limit: MAX_LIMIT,
        ..Query::default()
    });
    if known.is_empty() && entries.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "task not in memory (never seen, expired or evicted) and no evidence of it",
        );
    }
    json_response(
        StatusCode::OK,
        &json!({ "task_id": id, "memory": known, "evidence": entries }),
    )
}

fn view_json(view: &TaskView) -> Value {
    let time = |ms: u64| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_millis(at).to_string()
    };
    let [first, changed, stage_since, polled] = view.times;
    json!({
        "route": view.route,
        "store": view.store,
        "last_sent": {
            "status": view.state.status,
            "stage": view.state.stage,
            "progress": view.state.progress.map(|p| {
                serde_json::from_str::<Value>(&number_text(p)).unwrap_or(Value::Null)
            }),
        },
        "first_seen": time(first),
        "last_change": time(changed),
        "stage_since": time(stage_since),
        "last_polled": time(polled),
        "stalled": view.stalled,
    })
}

/// `a=1&b=x%20y` as decoded pairs; a pair that does not decode is skipped.
fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(key)?, decode(value)?))
        })
        .collect()
}

/// Percent-decoding, `+` as a space; `None` when it is not UTF-8 or not well formed.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}
