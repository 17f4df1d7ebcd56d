//! Deadline headers (`proxy::deadline`): any configured header name and any `grpc-timeout`
//! or milliseconds values. Reading never panics and never yields more than `MAX_BUDGET`;
//! what `write` puts out for a remaining budget reads back as at most that budget (rounded
//! down), and a positive budget never becomes a zero `grpc-timeout`.
//!
//! Input: a first line `G [HEADER]` (`G` `1` reads `grpc-timeout`), a second line with the
//! remaining budget in nanoseconds, then header lines.
#![no_main]

use std::time::Duration;

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use portcullis::config::schema::DeadlineConfig;
use portcullis::proxy::deadline::{write, Policy, Source, MAX_BUDGET};
use portcullis_fuzz::{header, lines, text};

fuzz_target!(|data: &[u8]| {
    let mut input = lines(data);
    let Some(first) = input.next().and_then(text) else {
        return;
    };
    let (grpc, name) = first.split_once(' ').unwrap_or((first, ""));
    let cfg = DeadlineConfig {
        grpc_timeout: grpc == "1",
        header: (!name.is_empty()).then(|| name.to_string()),
    };
    let remaining = input
        .next()
        .and_then(text)
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos);
    let mut headers = HeaderMap::new();
    for line in input {
        if let Some((name, value)) = header(line) {
            headers.append(name, value);
        }
    }
    let Ok(policy) = Policy::from_config(&cfg) else {
        return;
    };

    let source = match policy.incoming(&headers) {
        Ok(Some(incoming)) => {
            assert!(incoming.budget <= MAX_BUDGET, "{incoming:?}");
            incoming.source
        }
        Ok(None) | Err(_) => {
            headers.remove(portcullis::proxy::deadline::GRPC_TIMEOUT);
            if let Some(h) = &policy.header {
                headers.remove(h);
            }
            match (&policy.header, policy.grpc_timeout) {
                (Some(h), true) => Source::Both(h.clone()),
                (Some(h), false) => Source::Header(h.clone()),
                (None, true) => Source::GrpcTimeout,
                (None, false) => return,
            }
        }
    };

    write(&source, remaining, &mut headers);
    let back = match policy.incoming(&headers) {
        Ok(Some(back)) => back,
        other => panic!("written {source:?} {remaining:?} does not read back: {other:?}"),
    };
    assert!(
        back.budget <= remaining,
        "{remaining:?} came back as {back:?}"
    );
    assert!(back.budget <= MAX_BUDGET, "{back:?}");
    if matches!(source, Source::GrpcTimeout) && !remaining.is_zero() {
        assert!(!back.budget.is_zero(), "{remaining:?} became 0");
    }
});
