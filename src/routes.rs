//! The configured routes, each compiled once into a [`Route`], and request classification:
//! method + path pattern (`/test/status/{task_id}`) to a route.
//!
//! The result labels metrics and tells the inspection layer which route applies, so it is
//! computed once per request and carried in the request's extensions as a [`MatchedRoute`].

use std::sync::Arc;

use http::Method;

use crate::config::{ConfigError, RouteConfig};
use crate::engine::{FieldsConfig, Mode, RouteSpec};

/// Label of every request that matches no configured route.
pub const OTHER: &str = "other";

/// The route a request matched; route classification puts it into the extensions of a request
/// that matched a configured route (an unrouted request carries none: it counts as [`OTHER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchedRoute {
    /// Index into the [`RouteTable`] (the order of `config.routes`).
    pub index: usize,
}

/// The configured routes, compiled, in configuration order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// One configured route, compiled: what it matches and how its responses are inspected.
#[derive(Debug, Clone)]
pub struct Route {
    /// The `route` metric label and log name.
    name: Arc<str>,
    method: Method,
    segments: Vec<Segment>,
    /// Records, field keys, mode and tracking, for the engine.
    spec: RouteSpec,
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
    /// Compiles every route; errors name the key (`routes[1].path`, `fields.stage`).
    pub fn compile(
        routes: &[RouteConfig],
        fields: &FieldsConfig,
        mode: Mode,
        max_task_id_bytes: usize,
    ) -> Result<RouteTable, ConfigError> {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, route)| Route::compile(i, route, fields, (mode, max_task_id_bytes)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(RouteTable { routes })
    }

    /// The first configured route whose method and path match (`None`: [`OTHER`]); `path`
    /// has no query string.
    pub fn classify(&self, method: &Method, path: &str) -> Option<MatchedRoute> {
        self.routes
            .iter()
            .position(|route| route.method == method && route.matches(path))
            .map(|index| MatchedRoute { index })
    }

    /// The routes in configuration order (without `other`); a [`MatchedRoute::index`] is a
    /// position in it.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Route names in configuration order (without `other`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| &*r.name)
    }
}

// === impl Route ===

impl Route {
    /// Compiles `routes[i]`; the engine's errors about fields are reported at the route's
    /// `fields` when the route sets that key, at the global `[fields]` otherwise.
    fn compile(
        i: usize,
        route: &RouteConfig,
        fields: &FieldsConfig,
        (mode, max_task_id_bytes): (Mode, usize),
    ) -> Result<Route, ConfigError> {
        let key = |k: &str| format!("routes[{i}].{k}");
        let method = route.method.parse::<Method>().map_err(|_| {
            ConfigError::new(
                key("method"),
                format!("{:?} is not an HTTP method", route.method),
            )
        })?;
        let segments =
            parse_pattern(&route.path).map_err(|problem| ConfigError::new(key("path"), problem))?;
        let spec = RouteSpec::compile(
            &route.records,
            &route.fields.apply(fields),
            route.mode.unwrap_or(mode),
            route.track,
            max_task_id_bytes,
        )
        .map_err(|e| {
            let field = e
                .key
                .strip_prefix("fields.")
                .map(|rest| rest.split(['.', '[']).next().unwrap_or(rest));
            let at = match field {
                Some(field) if !route.fields.sets(field) => e.key,
                _ => key(&e.key),
            };
            ConfigError::new(at, e.problem)
        })?;
        Ok(Route {
            name: Arc::from(route.name.as_str()),
            method,
            segments,
            spec,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the engine needs to inspect this route's responses.
    pub fn spec(&self) -> &RouteSpec {
        &self.spec
    }

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
