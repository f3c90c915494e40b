//! Route classification: method + path pattern (`/test/status/{task_id}`) to a configured route.
//!
//! The result labels metrics and tells the inspection layer which route spec applies, so it is
//! computed once per request and carried in the request's extensions as a [`MatchedRoute`].

use std::sync::Arc;

use http::Method;

use crate::config::{ConfigError, RouteConfig};

/// Label of every request that matches no configured route.
pub const OTHER: &str = "other";

/// The route a request matched, put into the request's extensions by the metrics layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute {
    /// Index into `config.routes` (and everything compiled from it, in the same order);
    /// `None` for [`OTHER`].
    pub index: Option<usize>,
    /// The route's name, or `other`: the `route` metric label.
    pub name: Arc<str>,
}

/// The configured routes, compiled for matching.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    other: Arc<str>,
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    name: Arc<str>,
    method: Method,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Compared byte for byte with the path as sent, percent-encoding included.
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param,
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles the patterns; errors name the offending key.
    pub fn compile(routes: &[RouteConfig]) -> Result<RouteTable, ConfigError> {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let method = route.method.parse::<Method>().map_err(|_| {
                    ConfigError::new(format!("routes[{i}].method"), "not an HTTP method")
                })?;
                let segments = parse_pattern(&route.path)
                    .map_err(|problem| ConfigError::new(format!("routes[{i}].path"), problem))?;
                Ok(CompiledRoute {
                    name: Arc::from(route.name.as_str()),
                    method,
                    segments,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(RouteTable {
            routes,
            other: Arc::from(OTHER),
        })
    }

    /// The first configured route whose method and path match; `path` has no query string.
    pub fn classify(&self, method: &Method, path: &str) -> MatchedRoute {
        let index = self
            .routes
            .iter()
            .position(|route| route.method == method && route.matches(path));
        MatchedRoute {
            index,
            name: match index {
                Some(i) => self.routes[i].name.clone(),
                None => self.other.clone(),
            },
        }
    }

    /// Route names in configuration order (without `other`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| &*r.name)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

// === impl CompiledRoute ===

impl CompiledRoute {
    fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(want), Some(got)) if want == got => {}
                (Segment::Param, Some(got)) if !got.is_empty() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, String> {
    let rest = pattern
        .strip_prefix('/')
        .ok_or_else(|| "must start with '/'".to_string())?;
    rest.split('/')
        .map(|segment| {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(format!("bad parameter segment {segment:?}"));
                }
                Ok(Segment::Param)
            } else if segment.contains(['{', '}', '?', '#']) {
                Err(format!(
                    "segment {segment:?}: a parameter is a whole segment like {{task_id}}; no query"
                ))
            } else {
                Ok(Segment::Literal(segment.to_string()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
