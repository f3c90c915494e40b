//! In-flight inspection: the tower layer that runs the engine on status responses.
//!
//! The layer is glue. It decides whether a response is worth inspecting (configured route, 2xx,
//! JSON, declared size), holds the body within the limit, decodes it, asks the engine, records
//! metrics and the report, and rebuilds the response. On its routes it also narrows the
//! request's `Accept-Encoding` to the codings it reads. Anything it cannot handle streams through
//! as it came, and is counted.

mod accept;
mod body;
mod budget;
mod inspector;
mod issue_log;
mod layer;
mod metrics;
mod witness;

pub use accept::ClientCodings;
pub use body::InspectBody;
pub use inspector::{InspectionState, Inspector};
pub use layer::{InspectLayer, InspectService};
pub use metrics::{InspectionFamilies, InspectionMetrics, Skip};

use crate::BoxError;
