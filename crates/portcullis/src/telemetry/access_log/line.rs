//! One access log line: the facts of a finished request (`Entry`, owned, so that the writer
//! thread formats it and the request path only copies reference-counted handles) and their
//! JSON form (`Entry::write_json`), serialized straight into the writer's reused buffer.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Uri, Version};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::telemetry::{BodyEnd, RateLimitAction};

/// What replaces a redacted query parameter or header value.
pub const REDACTED: &str = "REDACTED";

/// The facts of one finished request, as the writer thread receives them.
#[derive(Debug)]
pub(super) struct Entry {
    /// Wall-clock arrival time, since the Unix epoch.
    pub arrival: Duration,
    /// From arrival to the end of the response body.
    pub duration: Duration,
    pub request_id: Option<HeaderValue>,
    pub trace_id: Option<[u8; 16]>,
    pub client_ip: Option<IpAddr>,
    pub peer: SocketAddr,
    pub listener: Option<Arc<str>>,
    /// The request line and headers as received; absent only if the pipeline kept no head.
    pub request: Option<RequestFacts>,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub endpoint: Option<SocketAddr>,
    pub attempts: u32,
    pub reason: &'static str,
    pub rate_limit: Option<(Arc<str>, RateLimitAction)>,
    pub status: u16,
    pub bytes_in: u64,
    pub end: BodyEnd,
}

/// The parts of the request head a line shows.
#[derive(Debug)]
pub(super) struct RequestFacts {
    pub method: Method,
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub version: Version,
    pub user_agent: Option<HeaderValue>,
    /// `(index in the configured header list, value)`, in list order; redacted values are
    /// already replaced.
    pub headers: Vec<(usize, HeaderValue)>,
}

/// How lines are formatted: what to redact and which headers are logged.
#[derive(Debug)]
pub(super) struct Format {
    /// Query parameter names whose values are replaced, as configured (matched ignoring
    /// ASCII case).
    pub redact_query: Vec<String>,
    /// The logged request headers, lowercase, in config order (`None`: no `headers` object).
    pub headers: Option<Vec<http::HeaderName>>,
}

impl Entry {
    /// Appends the JSON object (no newline) to `out`. On the (unreachable) failure of a
    /// serializer, `out` is left as it was and `false` returned.
    pub fn write_json(&self, format: &Format, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let request = self.request.as_ref();
        let line = Line {
            time: Rfc3339(self.arrival),
            request_id: self.request_id.as_ref().map(|v| Text(v.as_bytes())),
            trace_id: self.trace_id.map(TraceId),
            client_ip: self.client_ip,
            peer: self.peer,
            listener: self.listener.as_deref(),
            method: request.map(|r| r.method.as_str()),
            host: request.and_then(RequestFacts::host).map(Text),
            path: request.map(|r| Target {
                uri: &r.uri,
                redact: &format.redact_query,
            }),
            protocol: request.map(|r| protocol(r.version)),
            user_agent: request
                .and_then(|r| r.user_agent.as_ref())
                .map(|v| Text(v.as_bytes())),
            headers: format.headers.as_deref().map(|names| Headers {
                names,
                values: request.map_or(&[], |r| &r.headers),
            }),
            route: self.route.as_deref(),
            upstream: self.upstream.as_deref(),
            endpoint: self.endpoint,
            attempts: self.attempts,
            status: self.status,
            reason: (!self.reason.is_empty()).then_some(self.reason),
            rate_limit_policy: self.rate_limit.as_ref().map(|(name, _)| &**name),
            rate_limit_action: self.rate_limit.as_ref().map(|(_, a)| a.as_str()),
            bytes_in: self.bytes_in,
            bytes_out: self.end.bytes_out,
            duration_us: u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX),
            body_complete: self.end.complete,
            body_failed: self.end.failed,
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            true
        } else {
            out.truncate(start);
            false
        }
    }
}

impl RequestFacts {
    /// The host the client asked for: the URI's authority (HTTP/2, absolute form) or `Host`.
    fn host(&self) -> Option<&[u8]> {
        match self.uri.authority() {
            Some(authority) => Some(authority.as_str().as_bytes()),
            None => self.host.as_ref().map(HeaderValue::as_bytes),
        }
    }
}

/// The JSON object, field by field (docs/access-log.md lists them in this order).
#[derive(Serialize)]
struct Line<'a> {
    time: Rfc3339,
    request_id: Option<Text<'a>>,
    trace_id: Option<TraceId>,
    client_ip: Option<IpAddr>,
    peer: SocketAddr,
    listener: Option<&'a str>,
    method: Option<&'a str>,
    host: Option<Text<'a>>,
    path: Option<Target<'a>>,
    protocol: Option<&'static str>,
    user_agent: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Headers<'a>>,
    route: Option<&'a str>,
    upstream: Option<&'a str>,
    endpoint: Option<SocketAddr>,
    attempts: u32,
    status: u16,
    reason: Option<&'static str>,
    rate_limit_policy: Option<&'a str>,
    rate_limit_action: Option<&'static str>,
    bytes_in: u64,
    bytes_out: u64,
    duration_us: u64,
    body_complete: bool,
    body_failed: bool,
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// Bytes from the client shown as a JSON string: UTF-8 as is, anything else replaced by
/// U+FFFD (the serializer escapes quotes, backslashes and control characters).
struct Text<'a>(&'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_str(self),
        }
    }
}

/// 32 lowercase hex digits (W3C trace context).
struct TraceId([u8; 16]);

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 32];
        for (i, byte) in self.0.iter().enumerate() {
            text[2 * i] = HEX[usize::from(byte >> 4)];
            text[2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// The request target as received: path, then the query with redacted values replaced.
struct Target<'a> {
    uri: &'a Uri,
    redact: &'a [String],
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri.path())?;
        let Some(query) = self.uri.query() else {
            return Ok(());
        };
        f.write_char('?')?;
        if self.redact.is_empty() {
            return f.write_str(query);
        }
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_char('&')?;
            }
            match pair.split_once('=') {
                Some((name, _)) if redacted(name, self.redact) => {
                    f.write_str(name)?;
                    f.write_char('=')?;
                    f.write_str(REDACTED)?;
                }
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

impl Serialize for Target<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The common cases are one borrowed string, without the formatting machinery.
        match (self.uri.query(), self.uri.path_and_query()) {
            (None, _) => s.serialize_str(self.uri.path()),
            (Some(_), Some(target)) if self.redact.is_empty() => s.serialize_str(target.as_str()),
            _ => s.collect_str(self),
        }
    }
}

/// Whether query parameter `name` (as written, maybe percent-encoded) is one to redact.
pub(super) fn redacted(name: &str, redact: &[String]) -> bool {
    let decoded: std::borrow::Cow<'_, str> = if name.contains(['%', '+']) {
        form_urlencoded::parse(name.as_bytes())
            .next()
            .map_or(std::borrow::Cow::Borrowed(name), |(n, _)| n)
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    redact.iter().any(|r| r.eq_ignore_ascii_case(&decoded))
}

/// The `headers` object: every configured header the request carried, values of a repeated
/// header joined by `, `.
struct Headers<'a> {
    names: &'a [http::HeaderName],
    values: &'a [(usize, HeaderValue)],
}

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut rest = self.values;
        while let Some(&(index, _)) = rest.first() {
            let count = rest.iter().take_while(|(i, _)| *i == index).count();
            let (same, after) = rest.split_at(count);
            if let Some(name) = self.names.get(index) {
                map.serialize_entry(name.as_str(), &Joined(same))?;
            }
            rest = after;
        }
        map.end()
    }
}

struct Joined<'a>(&'a [(usize, HeaderValue)]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (_, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            Text(value.as_bytes()).fmt(f)?;
        }
        Ok(())
    }
}

impl Serialize for Joined<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [(_, one)] => Text(one.as_bytes()).serialize(s),
            _ => s.collect_str(self),
        }
    }
}

/// A time since the Unix epoch as RFC 3339 in UTC with microseconds:
/// `2025-03-01T12:34:56.789012Z`. Years past 9999 show as the last microsecond of 9999.
pub(super) struct Rfc3339(pub Duration);

/// 9999-12-31T23:59:59 UTC.
const MAX_SECS: u64 = 253_402_300_799;

impl Rfc3339 {
    fn text(&self) -> [u8; 27] {
        let (secs, micros) = if self.0.as_secs() > MAX_SECS {
            (MAX_SECS, 999_999)
        } else {
            (self.0.as_secs(), u64::from(self.0.subsec_micros()))
        };
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        digits(&mut out[0..4], year);
        digits(&mut out[5..7], month);
        digits(&mut out[8..10], day);
        digits(&mut out[11..13], of_day / 3600);
        digits(&mut out[14..16], of_day / 60 % 60);
        digits(&mut out[17..19], of_day % 60);
        digits(&mut out[20..26], micros);
        out
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// Writes `value` as decimal digits filling `out` (zero-padded, high digits cut).
fn digits(out: &mut [u8], mut value: u64) {
    for place in out.iter_mut().rev() {
        // `value % 10` is below 10, so the cast keeps it whole.
        *place = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01. Counts in 400-year eras
/// (146 097 days) starting on 0000-03-01, so that the leap day ends each counted year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}
