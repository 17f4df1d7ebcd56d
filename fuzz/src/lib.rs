//! Helpers shared by the fuzz targets.
//!
//! Inputs are text, so that the seeds in `corpus/` can be written by hand from the unit
//! tests' cases and read in a crash report. A request head is written as on the wire:
//!
//! ```text
//! GET /api/x?y=1 HTTP/2
//! host: example.com
//! x-forwarded-for: 10.0.0.1, 10.0.0.2
//! ```
//!
//! The version is optional (HTTP/1.1); lines end with `\n` (a `\r` before it is dropped);
//! header lines that are not a valid name and value are skipped, as a server would refuse
//! them before the gateway saw them.

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

/// The input split into lines (`\r\n` or `\n`).
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// `line` as text, or `None` if it is not UTF-8.
pub fn text(line: &[u8]) -> Option<&str> {
    std::str::from_utf8(line).ok()
}

/// `name: value` as a header, if both are valid (the value without leading blanks).
pub fn header(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = line.split_at(colon);
    let value = &value[1..];
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let name = HeaderName::from_bytes(name).ok()?;
    let value = HeaderValue::from_bytes(&value[start..]).ok()?;
    Some((name, value))
}

/// A request head from its request line and the header lines after it; `None` when the
/// request line is not a method and a URI hyper would hand over.
pub fn head<'a>(mut lines: impl Iterator<Item = &'a [u8]>) -> Option<Parts> {
    let request_line = lines.next()?;
    let mut words = request_line.split(|&b| b == b' ');
    let method = Method::from_bytes(words.next()?).ok()?;
    let uri = Uri::try_from(words.next()?).ok()?;
    let version = match words.next() {
        Some(b"HTTP/2") | Some(b"HTTP/2.0") => Version::HTTP_2,
        Some(b"HTTP/1.0") => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = header(line) {
            parts.headers.append(name, value);
        }
    }
    Some(parts)
}
