//! Outgoing W3C trace context: an attempt's `traceparent`, formatted by hand into a fixed
//! 55-byte buffer, and its `tracestate` when the trace has one. Incoming context is read by
//! the SDK's `TraceContextPropagator` (parsing untrusted input stays with the library);
//! ADR 0007 says why writing is done here.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::trace::{SpanId, TraceId, TraceState};

use crate::telemetry::hex;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
const TRACEPARENT_LEN: usize = 55;

/// The context of one outgoing request's parent span.
pub struct Outgoing<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
    pub state: &'a TraceState,
}

/// Whether `headers` has a field called `name`, found by one pass over the names rather
/// than a lookup: the trace-context names are not standard ones, so a lookup hashes them
/// byte by byte, which costs more than comparing the few names of a request head (most of
/// them standard, which differ from these at the first compare).
pub fn carries(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|field| field == name)
}

/// Writes `context` into `headers`, replacing any `traceparent`/`tracestate` there: what the
/// SDK's propagator writes (only the sampled flag; an empty `tracestate` is removed rather
/// than sent). An invalid context (an id of zero) writes nothing, as the propagator does.
pub fn inject(context: &Outgoing<'_>, headers: &mut HeaderMap) {
    if context.trace_id == TraceId::INVALID || context.span_id == SpanId::INVALID {
        return;
    }
    match HeaderValue::from_bytes(&traceparent(context)) {
        Ok(value) => headers.insert(TRACEPARENT, value),
        Err(_) => headers.remove(TRACEPARENT), // not reached: the bytes are hex and '-'
    };
    if *context.state == TraceState::NONE {
        // The usual case: nothing to format, and a removal only when there is something to
        // remove (a client's stale `tracestate`, or one a route set).
        if carries(headers, &TRACESTATE) {
            headers.remove(TRACESTATE);
        }
        return;
    }
    match HeaderValue::try_from(context.state.header()) {
        Ok(value) if !value.is_empty() => headers.insert(TRACESTATE, value),
        _ => headers.remove(TRACESTATE),
    };
}

fn traceparent(context: &Outgoing<'_>) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[..2].copy_from_slice(b"00");
    hex(&context.trace_id.to_bytes(), &mut out[3..35]);
    hex(&context.span_id.to_bytes(), &mut out[36..52]);
    hex(&[u8::from(context.sampled)], &mut out[53..]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags};
    use opentelemetry::Context;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    /// What `inject` writes, as name → value.
    fn injected(context: &Outgoing<'_>, headers: &mut HeaderMap) -> HashMap<String, String> {
        inject(context, headers);
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect()
    }

    #[test]
    fn writes_what_the_sdk_propagator_writes() {
        let states = [
            TraceState::default(),
            TraceState::from_str("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7").unwrap(),
        ];
        let ids = [
            (1, 1),
            (
                0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
                0xb7ad_6b71_6920_3331,
            ),
            (u128::MAX, u64::MAX),
        ];
        for state in &states {
            for (trace, span) in ids {
                for flags in [0x00, 0x01, 0x03] {
                    let flags = TraceFlags::new(flags);
                    let context = SpanContext::new(
                        TraceId::from(trace),
                        SpanId::from(span),
                        flags,
                        false,
                        state.clone(),
                    );
                    let mut expected = HashMap::new();
                    TraceContextPropagator::new().inject_context(
                        &Context::new().with_remote_span_context(context),
                        &mut expected,
                    );
                    expected.retain(|_, v: &mut String| !v.is_empty());
                    let outgoing = Outgoing {
                        trace_id: TraceId::from(trace),
                        span_id: SpanId::from(span),
                        sampled: flags.is_sampled(),
                        state,
                    };
                    let ours = injected(&outgoing, &mut HeaderMap::new());
                    assert_eq!(ours, expected, "{trace:x} {span:x} {flags:?} {state:?}");
                }
            }
        }
    }

    #[test]
    fn empty_tracestate_is_removed_not_sent() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACESTATE, HeaderValue::from_static("stale=1"));
        headers.insert(TRACEPARENT, HeaderValue::from_static("stale"));
        let outgoing = Outgoing {
            trace_id: TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c),
            span_id: SpanId::from(0xb7ad_6b71_6920_3331),
            sampled: true,
            state: &TraceState::default(),
        };
        inject(&outgoing, &mut headers);
        assert!(headers.get(TRACESTATE).is_none());
        assert_eq!(
            headers.get(TRACEPARENT).map(|v| v.as_bytes()),
            Some(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..])
        );
    }

    #[test]
    fn an_invalid_context_writes_nothing() {
        let mut headers = HeaderMap::new();
        let outgoing = Outgoing {
            trace_id: TraceId::INVALID,
            span_id: SpanId::from(1),
            sampled: false,
            state: &TraceState::default(),
        };
        inject(&outgoing, &mut headers);
        assert!(headers.is_empty());
    }
}
