//! One access log line: the facts of a finished request (`Entry`, a view borrowing them
//! from the request's `Record` and the runtime, so nothing is copied to build it) and their
//! JSON form (`Entry::write_json`), written straight into the caller's reused buffer.
//!
//! The line is written by hand, not through serde: its schema is fixed, and serde_json's
//! generic path (a `Serializer` call per field, small writes, `Display` for addresses,
//! escaping per fragment) cost about 10,000 instructions per line, against about 1,900 for
//! the writer here (measured with `bench/instructions.sh`, docs/access-log.md). Every string
//! from the client or the config goes through `escaped`, so the line is valid JSON
//! whatever it holds; the unit tests parse it back with serde_json.

use std::cell::Cell;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::{HeaderValue, Uri, Version};

use crate::telemetry::{hex, BodyEnd, Head, RateLimitAction};

/// What replaces a redacted query parameter or header value.
pub const REDACTED: &str = "REDACTED";

/// The facts of one finished request, borrowed for as long as its line is formatted.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Wall-clock arrival time, since the Unix epoch.
    pub arrival: Duration,
    pub request_id: Option<&'a HeaderValue>,
    pub trace_id: Option<[u8; 16]>,
    pub client_ip: Option<IpAddr>,
    pub peer: SocketAddr,
    pub listener: Option<&'a str>,
    /// The request line and headers as received; absent only if the pipeline kept no head.
    /// `logged_headers` are in list order, redacted values already replaced.
    pub request: Option<&'a Head>,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub endpoint: Option<SocketAddr>,
    pub attempts: u32,
    pub reason: &'static str,
    pub rate_limit: Option<(&'a str, RateLimitAction)>,
    pub status: u16,
    pub bytes_in: u64,
    pub end: BodyEnd,
}

/// How lines are formatted: what to redact and which headers are logged.
#[derive(Debug)]
pub struct Format {
    /// Query parameter names whose values are replaced, as configured (matched ignoring
    /// ASCII case).
    pub redact_query: Vec<String>,
    /// The logged request headers, lowercase, in config order (`None`: no `headers` object).
    pub headers: Option<Vec<http::HeaderName>>,
}

impl Entry<'_> {
    /// Appends the JSON object (no newline) to `out`, field by field in the documented
    /// order (docs/access-log.md).
    pub fn write_json(&self, format: &Format, out: &mut Vec<u8>) {
        let request = self.request;
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(&Rfc3339(self.arrival).text());
        out.extend_from_slice(b"\",\"request_id\":");
        text_or_null(out, self.request_id.map(HeaderValue::as_bytes));
        out.extend_from_slice(b",\"trace_id\":");
        match self.trace_id {
            Some(id) => trace_id(out, id),
            None => null(out),
        }
        out.extend_from_slice(b",\"client_ip\":");
        match self.client_ip {
            Some(ip) => {
                out.push(b'"');
                ip_addr(out, ip);
                out.push(b'"');
            }
            None => null(out),
        }
        out.extend_from_slice(b",\"peer\":");
        socket_addr(out, self.peer);
        out.extend_from_slice(b",\"listener\":");
        str_or_null(out, self.listener);
        out.extend_from_slice(b",\"method\":");
        str_or_null(out, request.map(|r| r.method.as_str()));
        out.extend_from_slice(b",\"host\":");
        text_or_null(out, request.and_then(Head::host));
        out.extend_from_slice(b",\"path\":");
        match request {
            Some(r) => target(out, &r.uri, &format.redact_query),
            None => null(out),
        }
        out.extend_from_slice(b",\"protocol\":");
        match request {
            Some(r) => protocol(out, r.version),
            None => null(out),
        }
        out.extend_from_slice(b",\"user_agent\":");
        text_or_null(
            out,
            request
                .and_then(|r| r.user_agent.as_ref())
                .map(HeaderValue::as_bytes),
        );
        if let Some(names) = &format.headers {
            out.extend_from_slice(b",\"headers\":");
            headers(out, names, request.map_or(&[], |r| &r.logged_headers));
        }
        out.extend_from_slice(b",\"route\":");
        str_or_null(out, self.route);
        out.extend_from_slice(b",\"upstream\":");
        str_or_null(out, self.upstream);
        out.extend_from_slice(b",\"endpoint\":");
        match self.endpoint {
            Some(addr) => socket_addr(out, addr),
            None => null(out),
        }
        out.extend_from_slice(b",\"attempts\":");
        number(out, self.attempts);
        out.extend_from_slice(b",\"status\":");
        number(out, self.status);
        out.extend_from_slice(b",\"reason\":");
        code_or_null(out, (!self.reason.is_empty()).then_some(self.reason));
        out.extend_from_slice(b",\"rate_limit_policy\":");
        str_or_null(out, self.rate_limit.map(|(name, _)| name));
        out.extend_from_slice(b",\"rate_limit_action\":");
        code_or_null(out, self.rate_limit.map(|(_, a)| a.as_str()));
        out.extend_from_slice(b",\"bytes_in\":");
        number(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        number(out, self.end.bytes_out);
        out.extend_from_slice(b",\"duration_us\":");
        number(
            out,
            u64::try_from(self.end.duration.as_micros()).unwrap_or(u64::MAX),
        );
        out.extend_from_slice(b",\"body_complete\":");
        boolean(out, self.end.complete);
        out.extend_from_slice(b",\"body_failed\":");
        boolean(out, self.end.failed);
        out.push(b'}');
    }
}

/// The protocol as a JSON string (each arm a constant: no escaping, no length to compute).
fn protocol(out: &mut Vec<u8>, version: Version) {
    match version {
        Version::HTTP_09 => out.extend_from_slice(b"\"HTTP/0.9\""),
        Version::HTTP_10 => out.extend_from_slice(b"\"HTTP/1.0\""),
        Version::HTTP_11 => out.extend_from_slice(b"\"HTTP/1.1\""),
        Version::HTTP_2 => out.extend_from_slice(b"\"HTTP/2.0\""),
        Version::HTTP_3 => out.extend_from_slice(b"\"HTTP/3.0\""),
        _ => out.extend_from_slice(b"\"unknown\""),
    }
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn number(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string, or `null`.
fn str_or_null(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(text) => {
            out.push(b'"');
            escaped(out, text);
            out.push(b'"');
        }
        None => null(out),
    }
}

/// One of the gateway's own codes (a reason, a rate-limit action) as a JSON string, or
/// `null`: they are lowercase ASCII words (`reason::ALL`, a unit test checks), so there is
/// nothing to escape or scan for.
fn code_or_null(out: &mut Vec<u8>, value: Option<&'static str>) {
    match value {
        Some(code) => {
            debug_assert!(clean_prefix::<true>(code.as_bytes()) == code.len());
            out.push(b'"');
            out.extend_from_slice(code.as_bytes());
            out.push(b'"');
        }
        None => null(out),
    }
}

/// Bytes from the client as a JSON string (or `null`): UTF-8 as is, anything else replaced
/// by U+FFFD.
fn text_or_null(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            out.push(b'"');
            lossy(out, bytes);
            out.push(b'"');
        }
        None => null(out),
    }
}

/// The contents of a JSON string (no quotes) for bytes that may not be UTF-8.
fn lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    // The usual case: ASCII with nothing to escape, found in one pass.
    if clean_prefix::<true>(bytes) == bytes.len() {
        return out.extend_from_slice(bytes);
    }
    // ASCII is UTF-8 already; the check is cheaper than UTF-8 validation.
    if bytes.is_ascii() {
        return escaped_bytes(out, bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => escaped(out, text),
        Err(_) => escaped(out, &String::from_utf8_lossy(bytes)),
    }
}

/// The contents of a JSON string (no quotes): runs of characters that need no escaping are
/// copied as they are; `"`, `\` and control characters are escaped (RFC 8259, section 7).
pub(super) fn escaped(out: &mut Vec<u8>, text: &str) {
    escaped_bytes(out, text.as_bytes());
}

/// `escaped` for bytes that are UTF-8 (the output is UTF-8 exactly when the input is).
fn escaped_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Most strings need no escaping at all: one check, one copy.
    let mut at = clean_prefix::<false>(bytes);
    if at == bytes.len() {
        return out.extend_from_slice(bytes);
    }
    let mut run = 0;
    loop {
        // The byte at `at` is ASCII, so `run..at` and `at + 1..` lie on character boundaries.
        out.extend_from_slice(bytes.get(run..at).unwrap_or_default());
        let Some(&byte) = bytes.get(at) else {
            return;
        };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                let mut escape = *b"\\u0000";
                hex(&[byte], &mut escape[4..]);
                out.extend_from_slice(&escape);
            }
        }
        run = at + 1;
        at = run + clean_prefix::<false>(bytes.get(run..).unwrap_or_default());
    }
}

/// How many leading bytes need no escaping (and, with `ASCII`, are ASCII). Checks eight
/// bytes at a time: a word has a byte to escape exactly when one of its bytes is below
/// 0x20, `"` or `\\` (the "has a zero byte" test on the word and on its XOR with each
/// character); a non-ASCII byte has its high bit set.
fn clean_prefix<const ASCII: bool>(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let needs = |word: u64| {
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let below_space = word.wrapping_sub(ONES * 0x20) & !word;
        let is_quote = quote.wrapping_sub(ONES) & !quote;
        let is_backslash = backslash.wrapping_sub(ONES) & !backslash;
        let non_ascii = if ASCII { word } else { 0 };
        (below_space | is_quote | is_backslash | non_ascii) & HIGH != 0
    };
    let clean =
        |byte: &u8| *byte >= 0x20 && *byte != b'"' && *byte != b'\\' && (!ASCII || byte.is_ascii());
    let mut done = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if needs(u64::from_le_bytes(word)) {
            break;
        }
        done += 8;
    }
    let rest = bytes.get(done..).unwrap_or_default();
    done + rest.iter().take_while(|b| clean(b)).count()
}

/// 32 lowercase hex digits (W3C trace context), quoted.
fn trace_id(out: &mut Vec<u8>, id: [u8; 16]) {
    let mut text = [b'"'; 34];
    hex(&id, &mut text[1..33]);
    out.extend_from_slice(&text);
}

/// An address as its `Display` form shows it (no quotes).
pub(super) fn ip_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => v4_addr(out, v4, None),
        // Rare: through the formatter. Writing into a `Vec` does not fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A socket address as a JSON string, as its `Display` form shows it (`1.2.3.4:80`,
/// `[::1]:80`, with a zone `%N` when it has one).
pub(super) fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    out.push(b'"');
    match addr {
        SocketAddr::V4(v4) => v4_addr(out, *v4.ip(), Some(v4.port())),
        // Rare: through the formatter. Writing into a `Vec` does not fail.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

/// `a.b.c.d` (and `:port`), gathered on the stack and appended in one copy.
fn v4_addr(out: &mut Vec<u8>, ip: Ipv4Addr, port: Option<u16>) {
    // "255.255.255.255:65535" is 21 bytes.
    let mut text = Digits::<21>::default();
    let [a, b, c, d] = ip.octets();
    text.decimal(u32::from(a));
    for octet in [b, c, d] {
        text.push(b'.');
        text.decimal(u32::from(octet));
    }
    if let Some(port) = port {
        text.push(b':');
        text.decimal(u32::from(port));
    }
    out.extend_from_slice(text.as_bytes());
}

/// A short run of ASCII text built on the stack (what does not fit is cut).
struct Digits<const N: usize> {
    text: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Digits<N> {
    fn default() -> Self {
        Self {
            text: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Digits<N> {
    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.text.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// The decimal digits of `value` (below 100 000), without leading zeros: one division
    /// per digit the value has (octets and ports are mostly short).
    fn decimal(&mut self, value: u32) {
        // Each digit is below 10, so the casts keep it whole.
        let digit = |place: u32| b'0' + (value / place % 10) as u8;
        if value >= 10_000 {
            self.push(digit(10_000));
        }
        if value >= 1000 {
            self.push(digit(1000));
        }
        if value >= 100 {
            self.push(digit(100));
        }
        if value >= 10 {
            self.push(digit(10));
        }
        self.push(digit(1));
    }

    fn as_bytes(&self) -> &[u8] {
        self.text.get(..self.len).unwrap_or_default()
    }
}

/// The request target as received, quoted: path, then the query with redacted values
/// replaced.
fn target(out: &mut Vec<u8>, uri: &Uri, redact: &[String]) {
    out.push(b'"');
    match (uri.query(), uri.path_and_query()) {
        (None, _) => escaped(out, uri.path()),
        (Some(_), Some(target)) if redact.is_empty() => escaped(out, target.as_str()),
        (Some(query), _) => {
            escaped(out, uri.path());
            out.push(b'?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push(b'&');
                }
                match pair.split_once('=') {
                    Some((name, _)) if redacted(name, redact) => {
                        escaped(out, name);
                        out.push(b'=');
                        out.extend_from_slice(REDACTED.as_bytes());
                    }
                    _ => escaped(out, pair),
                }
            }
        }
    }
    out.push(b'"');
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
fn headers(out: &mut Vec<u8>, names: &[http::HeaderName], values: &[(usize, HeaderValue)]) {
    out.push(b'{');
    let mut first = true;
    let mut rest = values;
    while let Some(&(index, _)) = rest.first() {
        let count = rest.iter().take_while(|(i, _)| *i == index).count();
        let (same, after) = rest.split_at(count);
        if let Some(name) = names.get(index) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            escaped(out, name.as_str());
            out.extend_from_slice(b"\":\"");
            for (i, (_, value)) in same.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                lossy(out, value.as_bytes());
            }
            out.push(b'"');
        }
        rest = after;
    }
    out.push(b'}');
}

/// A time since the Unix epoch as RFC 3339 in UTC with microseconds:
/// `2025-03-01T12:34:56.789012Z`. Years past 9999 show as the last microsecond of 9999.
pub(super) struct Rfc3339(pub Duration);

/// 9999-12-31T23:59:59 UTC.
const MAX_SECS: u64 = 253_402_300_799;

thread_local! {
    /// The second this thread formatted last, with its `YYYY-MM-DDTHH:MM:SS`: lines in a
    /// row mostly share their second, and the calendar arithmetic is most of a timestamp's
    /// cost.
    static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl Rfc3339 {
    pub(super) fn text(&self) -> [u8; 27] {
        let (secs, micros) = if self.0.as_secs() > MAX_SECS {
            (MAX_SECS, 999_999)
        } else {
            (self.0.as_secs(), u64::from(self.0.subsec_micros()))
        };
        let cached = LAST_SECOND
            .try_with(|last| {
                let (second, text) = last.get();
                (second == secs).then_some(text)
            })
            .ok()
            .flatten();
        let date_time = cached.unwrap_or_else(|| {
            let text = date_time(secs);
            // Not kept while the thread is being torn down: computed each time then.
            let _ = LAST_SECOND.try_with(|last| last.set((secs, text)));
            text
        });
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        out[..19].copy_from_slice(&date_time);
        digits(&mut out[20..26], micros);
        out
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the Unix epoch (at most `MAX_SECS`).
fn date_time(secs: u64) -> [u8; 19] {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00";
    digits(&mut out[0..4], year);
    digits(&mut out[5..7], month);
    digits(&mut out[8..10], day);
    digits(&mut out[11..13], of_day / 3600);
    digits(&mut out[14..16], of_day / 60 % 60);
    digits(&mut out[17..19], of_day % 60);
    out
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
