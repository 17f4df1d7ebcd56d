//! Policies: what a route applies to a request before it is forwarded and to the response
//! after. A closed enum, statically dispatched; the order in `Route::policies` is the order
//! of application.

pub mod headers;
pub mod ratelimit;
pub mod rewrite;

use http::request::Parts;
use http::response::Parts as ResponseParts;

use crate::body::Body;

/// What the pipeline does after a policy ran.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a return value, never stored: `Continue` writes only the tag, and boxing would \
              cost every refusal an allocation"
)]
pub enum Flow {
    /// Go on with the (possibly modified) request.
    Continue,
    /// Stop and answer the client with this response.
    Respond(http::Response<Body>),
}

/// One policy instance, compiled from the route's config.
#[derive(Debug)]
pub enum Policy {
    /// Rewrites the request path (and keeps the query).
    Rewrite(rewrite::PathRewriter),
    /// Edits request headers sent upstream.
    RequestHeaders(headers::HeaderEdits),
    /// Edits response headers sent to the client.
    ResponseHeaders(headers::HeaderEdits),
}

impl Policy {
    /// Runs on the request head before it is forwarded.
    pub fn on_request(&self, req: &mut Parts) -> Flow {
        match self {
            Policy::Rewrite(r) => r.apply(req),
            Policy::RequestHeaders(edits) => {
                edits.apply(&mut req.headers);
                Flow::Continue
            }
            Policy::ResponseHeaders(_) => Flow::Continue,
        }
    }

    /// Runs on the response head before it is sent to the client.
    pub fn on_response(&self, resp: &mut ResponseParts) {
        match self {
            Policy::ResponseHeaders(edits) => edits.apply(&mut resp.headers),
            Policy::Rewrite(_) | Policy::RequestHeaders(_) => {}
        }
    }
}
