//! Deadline headers: reading the caller's remaining time from `grpc-timeout` or a configured
//! milliseconds header, and writing what is left of it back out in the same format.
//!
//! `grpc-timeout` follows the gRPC over HTTP/2 protocol spec: 1 to 8 ASCII digits then one
//! unit, `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds,
//! `n` nanoseconds. The milliseconds header is a non-negative integer.
//!
//! A header may come more than once, and one line may carry several comma-separated values:
//! the smallest valid value of all of them is the budget, so adding a line can only shorten
//! the caller's deadline, never stretch it, whichever value an upstream or another proxy
//! would have read. Values that do not parse are ignored when at least one other value of
//! the same header does; a header none of whose values parse is malformed.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::schema::DeadlineConfig;

/// The gRPC deadline header.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The longest budget: `99999999H`, the largest `grpc-timeout` (about 11 400 years). Longer
/// values saturate to it, so `Instant::now() + budget` cannot overflow.
pub const MAX_BUDGET: Duration = Duration::from_secs(MAX_DIGITS_VALUE * 3600);

/// The largest value 8 digits hold.
const MAX_DIGITS_VALUE: u64 = 99_999_999;

/// `grpc-timeout` units, finest first, with their length in nanoseconds.
const GRPC_UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60 * 1_000_000_000),
    (b'H', 3_600 * 1_000_000_000),
];

/// Where the incoming deadline came from, so the remaining budget goes back out in the same
/// header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    GrpcTimeout,
    /// The route's milliseconds header.
    Header(HeaderName),
    /// Both arrived (the smaller one set the budget); both go back out with what is left, so
    /// an upstream that reads either never gets more time than remains.
    Both(HeaderName),
}

/// The caller's deadline: the time it gives the request, from the moment its head arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub budget: Duration,
    pub source: Source,
}

/// A deadline header whose value does not parse; the request gets 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed deadline header {header}")]
pub struct Malformed {
    pub header: HeaderName,
}

/// A route's `deadline` settings, compiled: the header name parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Read (and propagate) `grpc-timeout`.
    pub grpc_timeout: bool,
    /// A header carrying the caller's remaining time in milliseconds.
    pub header: Option<HeaderName>,
}

impl Policy {
    /// Compiles `deadline`; the error names what is wrong with `header`.
    pub fn from_config(cfg: &DeadlineConfig) -> Result<Policy, String> {
        let header = match &cfg.header {
            None => None,
            Some(name) => {
                let parsed = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("\"{name}\" is not a valid header name"))?;
                if parsed == GRPC_TIMEOUT {
                    return Err(
                        "grpc-timeout is not a milliseconds header; use grpc_timeout: true".into(),
                    );
                }
                Some(parsed)
            }
        };
        Ok(Policy {
            grpc_timeout: cfg.grpc_timeout,
            header,
        })
    }

    /// Whether no deadline header is read at all.
    pub fn is_off(&self) -> bool {
        !self.grpc_timeout && self.header.is_none()
    }

    /// Reads the caller's deadline from `headers`: for each header the smallest valid value
    /// of all its lines and comma-separated elements (see the module docs). When both headers
    /// are present the smaller budget wins. A header none of whose values parse is an error,
    /// even if the other header is fine.
    pub fn incoming(&self, headers: &HeaderMap) -> Result<Option<Incoming>, Malformed> {
        let grpc = if self.grpc_timeout {
            smallest(headers, &GRPC_TIMEOUT, parse_grpc_timeout)?
        } else {
            None
        };
        let millis = match &self.header {
            None => None,
            Some(name) => smallest(headers, name, parse_millis)?.map(|budget| (name, budget)),
        };
        Ok(match (grpc, millis) {
            (None, None) => None,
            (Some(budget), None) => Some(Incoming {
                budget,
                source: Source::GrpcTimeout,
            }),
            (None, Some((name, budget))) => Some(Incoming {
                budget,
                source: Source::Header(name.clone()),
            }),
            (Some(grpc), Some((name, millis))) => Some(Incoming {
                budget: grpc.min(millis),
                source: Source::Both(name.clone()),
            }),
        })
    }
}

/// The smallest value `parse` accepts among every line of `name` and every comma-separated
/// element of each (optional whitespace around an element is not part of it). `None` when
/// the header is absent; malformed when it is present and no value parses.
fn smallest(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: fn(&[u8]) -> Option<Duration>,
) -> Result<Option<Duration>, Malformed> {
    let mut present = false;
    let mut best: Option<Duration> = None;
    for value in headers.get_all(name) {
        present = true;
        for element in value.as_bytes().split(|&b| b == b',') {
            if let Some(budget) = parse(element.trim_ascii()) {
                best = Some(best.map_or(budget, |b| b.min(budget)));
            }
        }
    }
    match best {
        None if present => Err(Malformed {
            header: name.clone(),
        }),
        best => Ok(best),
    }
}

/// Writes the `remaining` budget into `headers` in the format of `source`, replacing what was
/// there. Always rounds down, so the upstream never gets more time than is left:
/// `grpc-timeout` takes the most precise unit whose value fits in 8 digits (a positive budget
/// never becomes `0`), the milliseconds header whole milliseconds.
pub fn write(source: &Source, remaining: Duration, headers: &mut HeaderMap) {
    match source {
        Source::GrpcTimeout => write_grpc_timeout(remaining, headers),
        Source::Header(name) => write_millis(name, remaining, headers),
        Source::Both(name) => {
            write_grpc_timeout(remaining, headers);
            write_millis(name, remaining, headers);
        }
    }
}

fn write_grpc_timeout(remaining: Duration, headers: &mut HeaderMap) {
    if let Ok(value) = HeaderValue::from_bytes(format_grpc_timeout(remaining).as_bytes()) {
        headers.insert(GRPC_TIMEOUT, value);
    }
}

fn write_millis(name: &HeaderName, remaining: Duration, headers: &mut HeaderMap) {
    let millis = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
    headers.insert(name.clone(), HeaderValue::from(millis));
}

/// A `grpc-timeout` value; `None` unless it is 1-8 ASCII digits then a unit.
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    // At most 8 digits: no overflow.
    let n = decimal(digits)?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A milliseconds header value: one or more ASCII digits, saturating at `MAX_BUDGET`.
fn parse_millis(value: &[u8]) -> Option<Duration> {
    if value.is_empty() {
        return None;
    }
    let millis = decimal(value)?;
    Some(Duration::from_millis(millis).min(MAX_BUDGET))
}

/// ASCII digits as a number, saturating at `u64::MAX`; `None` if a byte is not a digit.
fn decimal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.saturating_mul(10).saturating_add(u64::from(b - b'0')))
    })
}

/// The most precise `grpc-timeout` for `remaining` that fits in 8 digits, rounded down;
/// budgets past `MAX_BUDGET` saturate to it.
fn format_grpc_timeout(remaining: Duration) -> String {
    let nanos = remaining.as_nanos();
    for (unit, unit_nanos) in GRPC_UNITS {
        let value = nanos / unit_nanos;
        if value <= u128::from(MAX_DIGITS_VALUE) {
            return format!("{value}{}", char::from(unit));
        }
    }
    format!("{MAX_DIGITS_VALUE}H")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(grpc_timeout: bool, header: Option<&str>) -> Policy {
        Policy::from_config(&DeadlineConfig {
            grpc_timeout,
            header: header.map(str::to_owned),
        })
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn grpc(value: &str) -> Result<Option<Incoming>, Malformed> {
        policy(true, None).incoming(&headers(&[("grpc-timeout", value)]))
    }

    fn budget(value: &str) -> Duration {
        grpc(value).unwrap().unwrap().budget
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(budget("2H"), Duration::from_secs(7200));
        assert_eq!(budget("3M"), Duration::from_secs(180));
        assert_eq!(budget("10S"), Duration::from_secs(10));
        assert_eq!(budget("250m"), Duration::from_millis(250));
        assert_eq!(budget("7u"), Duration::from_micros(7));
        assert_eq!(budget("99999999n"), Duration::from_nanos(99_999_999));
        assert_eq!(budget("0S"), Duration::ZERO);
        assert_eq!(budget("00000001m"), Duration::from_millis(1));
    }

    #[test]
    fn the_largest_grpc_timeout_does_not_overflow() {
        assert_eq!(budget("99999999H"), MAX_BUDGET);
        let now = tokio::time::Instant::now();
        assert!(now.checked_add(MAX_BUDGET).is_some());
    }

    #[test]
    fn malformed_grpc_timeouts_are_errors() {
        for bad in [
            "",
            "S",
            "10",
            "10s",
            "10h",
            "123456789S",
            "-1S",
            "+1S",
            "1.5S",
            "1 S",
            ",",
            " , ",
            "1SS",
            "1µ",
            "٣S",
        ] {
            let Ok(value) = HeaderValue::from_str(bad) else {
                continue;
            };
            let mut map = HeaderMap::new();
            map.insert(GRPC_TIMEOUT, value);
            assert_eq!(
                policy(true, None).incoming(&map),
                Err(Malformed {
                    header: GRPC_TIMEOUT
                }),
                "{bad:?}"
            );
        }
        // Not valid UTF-8 either.
        let mut map = HeaderMap::new();
        map.insert(GRPC_TIMEOUT, HeaderValue::from_bytes(b"1\xffS").unwrap());
        assert!(policy(true, None).incoming(&map).is_err());
    }

    #[test]
    fn grpc_timeout_is_ignored_when_off() {
        let map = headers(&[("grpc-timeout", "nonsense")]);
        assert_eq!(policy(false, None).incoming(&map), Ok(None));
        assert!(policy(false, None).is_off());
        assert_eq!(policy(true, None).incoming(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn millisecond_header() {
        let p = policy(false, Some("X-Deadline-Ms"));
        let name = HeaderName::from_static("x-deadline-ms");
        assert_eq!(
            p.incoming(&headers(&[("x-deadline-ms", "1500")])),
            Ok(Some(Incoming {
                budget: Duration::from_millis(1500),
                source: Source::Header(name.clone()),
            }))
        );
        assert_eq!(
            p.incoming(&headers(&[("x-deadline-ms", "0")]))
                .unwrap()
                .unwrap()
                .budget,
            Duration::ZERO
        );
        // Far too large saturates.
        assert_eq!(
            p.incoming(&headers(&[("x-deadline-ms", "99999999999999999999999999")]))
                .unwrap()
                .unwrap()
                .budget,
            MAX_BUDGET
        );
        for bad in ["", "-1", "1.5", "1e3", "12ms", "0x10"] {
            assert_eq!(
                p.incoming(&headers(&[("x-deadline-ms", bad)])),
                Err(Malformed {
                    header: name.clone()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_smaller_of_both_wins() {
        let p = policy(true, Some("x-deadline-ms"));
        let name = HeaderName::from_static("x-deadline-ms");
        let both =
            |g: &str, m: &str| p.incoming(&headers(&[("grpc-timeout", g), ("x-deadline-ms", m)]));
        assert_eq!(
            both("2S", "1500"),
            Ok(Some(Incoming {
                budget: Duration::from_millis(1500),
                source: Source::Both(name.clone()),
            }))
        );
        assert_eq!(
            both("1S", "1500").unwrap().unwrap().budget,
            Duration::from_secs(1)
        );
        // One malformed value is enough to refuse.
        assert!(both("1S", "soon").is_err());
        assert!(both("soon", "1500").is_err());
    }

    /// `(lines of the header, expected budget in ms or None for malformed)`.
    type RepeatCase = (&'static [&'static str], Option<u64>);

    fn repeated(p: &Policy, name: &str, lines: &[&str]) -> Result<Option<Incoming>, Malformed> {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(line).unwrap(),
            );
        }
        p.incoming(&map)
    }

    fn check_repeats(p: &Policy, name: &str, cases: &[RepeatCase]) {
        for (lines, want) in cases {
            let got = repeated(p, name, lines);
            match want {
                Some(ms) => assert_eq!(
                    got.map(|i| i.map(|i| i.budget)),
                    Ok(Some(Duration::from_millis(*ms))),
                    "{name}: {lines:?}"
                ),
                None => assert!(got.is_err(), "{name}: {lines:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_repeated_millisecond_header_takes_its_smallest_valid_value() {
        let p = policy(false, Some("x-request-timeout-ms"));
        let cases: &[RepeatCase] = &[
            (&["1000", "100"], Some(100)),
            (&["100", "1000"], Some(100)),
            (&["5000", "300", "2000"], Some(300)),
            (&["1000, 100"], Some(100)),
            (&["1000,100", "50"], Some(50)),
            (&["2000", "700 ,1500"], Some(700)),
            (&["1000", "0"], Some(0)),
            (&["1000", "1000"], Some(1000)),
            // Invalid values among valid ones are ignored...
            (&["1000", "soon"], Some(1000)),
            (&["soon", "250"], Some(250)),
            (&["-1, 400"], Some(400)),
            (&["400,"], Some(400)),
            (&["99999999999999999999", "20"], Some(20)),
            // ...and a header with none valid is malformed.
            (&["soon", "later"], None),
            (&["-1, 1.5"], None),
            (&[""], None),
        ];
        check_repeats(&p, "x-request-timeout-ms", cases);
    }

    #[test]
    fn a_repeated_grpc_timeout_takes_its_smallest_valid_value() {
        let p = policy(true, None);
        let cases: &[RepeatCase] = &[
            (&["1S", "100m"], Some(100)),
            (&["100m", "1S"], Some(100)),
            (&["1M", "2S", "3000m"], Some(2000)),
            (&["1S, 100m"], Some(100)),
            (&["1H", "500000u,400m"], Some(400)),
            (&["5000000n", "1S"], Some(5)),
            // 9 digits: not a grpc-timeout, ignored.
            (&["300000000n", "1S"], Some(1000)),
            (&["1S", "bad"], Some(1000)),
            (&["10", "1S"], Some(1000)),
            (&["bad", "also bad"], None),
        ];
        check_repeats(&p, "grpc-timeout", cases);
    }

    #[test]
    fn repeated_values_of_both_headers_take_the_smallest_of_all() {
        let p = policy(true, Some("x-deadline-ms"));
        let mut map = HeaderMap::new();
        for (k, v) in [
            ("grpc-timeout", "2S"),
            ("x-deadline-ms", "1500"),
            ("grpc-timeout", "800m"),
            ("x-deadline-ms", "900, 1200"),
        ] {
            map.append(k, HeaderValue::from_static(v));
        }
        let got = p.incoming(&map).unwrap().unwrap();
        assert_eq!(got.budget, Duration::from_millis(800));
        assert_eq!(
            got.source,
            Source::Both(HeaderName::from_static("x-deadline-ms"))
        );
        // Writing back replaces every line with one value.
        write(&got.source, Duration::from_millis(700), &mut map);
        assert_eq!(map.get_all(GRPC_TIMEOUT).iter().count(), 1);
        assert_eq!(map.get_all("x-deadline-ms").iter().count(), 1);
    }

    #[test]
    fn config_header_is_checked() {
        let cfg = |h: &str| DeadlineConfig {
            grpc_timeout: true,
            header: Some(h.into()),
        };
        assert!(Policy::from_config(&cfg("bad header")).is_err());
        assert!(Policy::from_config(&cfg("grpc-timeout")).is_err());
        assert!(
            Policy::from_config(&DeadlineConfig::default())
                .unwrap()
                .grpc_timeout
        );
    }

    #[test]
    fn grpc_timeout_is_written_in_the_finest_unit_that_fits() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_001), "100000u"),
            (Duration::from_millis(1500), "1500000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_millis(100_000_999), "100000S"),
            (Duration::from_secs(100_000_000), "1666666M"),
            (Duration::from_secs(6_000_000_000), "1666666H"),
            (MAX_BUDGET, "99999999H"),
            (Duration::MAX, "99999999H"),
        ];
        for (remaining, want) in cases {
            let mut map = HeaderMap::new();
            write(&Source::GrpcTimeout, remaining, &mut map);
            assert_eq!(map[GRPC_TIMEOUT], want, "{remaining:?}");
        }
    }

    #[test]
    fn millis_are_written_rounded_down() {
        let name = HeaderName::from_static("x-deadline-ms");
        let mut map = headers(&[("x-deadline-ms", "5000")]);
        write(
            &Source::Header(name.clone()),
            Duration::from_micros(1_999_999),
            &mut map,
        );
        assert_eq!(map[&name], "1999");
        assert!(!map.contains_key(GRPC_TIMEOUT));
        write(
            &Source::Both(name.clone()),
            Duration::from_millis(20),
            &mut map,
        );
        assert_eq!(map[&name], "20");
        assert_eq!(map[GRPC_TIMEOUT], "20000000n");
        assert_eq!(map.len(), 2);
    }

    proptest! {
        #[test]
        fn grpc_timeout_round_trips_down(nanos in 0u64..=u64::MAX, shift in 0u32..64) {
            // Spread the durations over every unit: shift picks the magnitude.
            let remaining = Duration::from_nanos(nanos >> shift);
            let mut map = HeaderMap::new();
            write(&Source::GrpcTimeout, remaining, &mut map);
            let back = policy(true, None).incoming(&map).unwrap().unwrap().budget;
            prop_assert!(back <= remaining, "{remaining:?} -> {back:?}");
            prop_assert_eq!(back.is_zero(), remaining.is_zero());
            // Precise to the 8 digits: the loss is under 1/99999 of the budget (a unit step
            // is at most 1000× the previous one, whose value did not fit in 8 digits).
            let lost = remaining - back;
            prop_assert!(lost.as_nanos() * 99_999 <= remaining.as_nanos(), "{remaining:?} -> {back:?}");
        }

        #[test]
        fn millis_round_trip_down(millis in 0u64..10_000_000_000, sub in 0u32..1_000_000) {
            let name = HeaderName::from_static("x-deadline-ms");
            let remaining = Duration::from_millis(millis) + Duration::from_nanos(u64::from(sub));
            let mut map = HeaderMap::new();
            write(&Source::Header(name), remaining, &mut map);
            let back = policy(false, Some("x-deadline-ms")).incoming(&map).unwrap().unwrap().budget;
            prop_assert_eq!(back, Duration::from_millis(millis));
        }

        #[test]
        fn parsing_never_panics(value in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let mut map = HeaderMap::new();
                map.insert(GRPC_TIMEOUT, value.clone());
                map.insert("x-deadline-ms", value);
                let _ = policy(true, Some("x-deadline-ms")).incoming(&map);
            }
        }

        #[test]
        fn the_smallest_of_repeated_values_wins(
            values in proptest::collection::vec(0u64..100_000_000, 1..6),
            one_line in any::<bool>(),
        ) {
            let mut map = HeaderMap::new();
            if one_line {
                let joined: Vec<String> = values.iter().map(|v| format!("{v}m")).collect();
                map.insert(GRPC_TIMEOUT, HeaderValue::from_str(&joined.join(", ")).unwrap());
            } else {
                for v in &values {
                    map.append(GRPC_TIMEOUT, HeaderValue::from_str(&format!("{v}m")).unwrap());
                }
            }
            let min = values.iter().copied().min().unwrap_or_default();
            let got = policy(true, None).incoming(&map).unwrap().unwrap().budget;
            prop_assert_eq!(got, Duration::from_millis(min));
        }

        #[test]
        fn well_shaped_values_parse(value in "[0-9]{1,8}[HMSmun]") {
            prop_assert!(grpc(&value).unwrap().is_some());
        }

        #[test]
        fn ill_shaped_values_do_not_parse(value in "[0-9]{9,12}[HMSmun]|[0-9]{0,8}[^HMSmun0-9]") {
            if HeaderValue::from_str(&value).is_ok() {
                prop_assert!(grpc(&value).is_err());
            }
        }
    }
}
