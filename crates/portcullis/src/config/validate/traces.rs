//! Semantic checks on `telemetry.tracing`: the OTLP endpoint and headers, the sampling
//! ratio, the resource attributes and the batch settings.

use super::{at_least, header_name, header_value, positive, Problems};
use crate::config::schema::TracingConfig;
use crate::config::Config;

const PATH: &str = "telemetry.tracing";

/// Most finished spans the export queue may hold (and so spans in one batch, whose buffer is
/// allocated up front): a larger queue would fail the start or abort it.
pub const MAX_QUEUE_SIZE: usize = 1 << 20;

pub(super) fn tracing(config: &Config, p: &mut Problems) {
    let t: &TracingConfig = &config.telemetry.tracing;
    if let Some(otlp) = &t.otlp {
        p.check(format!("{PATH}.otlp.endpoint"), endpoint(&otlp.endpoint));
        positive(p, format!("{PATH}.otlp.timeout"), otlp.timeout);
        for (name, value) in &otlp.headers {
            let path = format!("{PATH}.otlp.headers.{name}");
            p.check(path.clone(), header_name(name));
            // The value is a secret: the message must not repeat it.
            if header_value(value).is_err() {
                p.push(
                    path,
                    "is not a valid header value (control characters are not allowed)",
                );
            }
        }
    }
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        p.push(
            format!("{PATH}.sampling_ratio"),
            format!("must be between 0.0 and 1.0, got {}", t.sampling_ratio),
        );
    }
    if t.service_name.trim().is_empty() {
        p.push(format!("{PATH}.service_name"), "must not be empty");
    }
    for key in t.resource.keys() {
        let path = format!("{PATH}.resource.{key}");
        if key.trim().is_empty() {
            p.push(path, "attribute names must not be empty");
        } else if key == "service.name" {
            p.push(path, "set service.name with telemetry.tracing.service_name");
        }
    }
    let batch = &t.batch;
    at_least(
        p,
        format!("{PATH}.batch.max_queue_size"),
        batch.max_queue_size,
        1,
    );
    at_least(
        p,
        format!("{PATH}.batch.max_batch_size"),
        batch.max_batch_size,
        1,
    );
    if batch.max_queue_size > MAX_QUEUE_SIZE {
        p.push(
            format!("{PATH}.batch.max_queue_size"),
            format!(
                "must be at most {MAX_QUEUE_SIZE}, got {}",
                batch.max_queue_size
            ),
        );
    }
    if batch.max_batch_size > batch.max_queue_size {
        p.push(
            format!("{PATH}.batch.max_batch_size"),
            format!(
                "must not exceed max_queue_size ({}), got {}",
                batch.max_queue_size, batch.max_batch_size
            ),
        );
    }
    positive(
        p,
        format!("{PATH}.batch.schedule_delay"),
        batch.schedule_delay,
    );
}

/// The collector's base URL: `http://host[:port][/path]`, no query or fragment.
fn endpoint(endpoint: &str) -> Result<(), String> {
    let usage = || format!("\"{endpoint}\" must be an http URL like http://otel-collector:4318");
    let uri: http::Uri = endpoint.parse().map_err(|_| usage())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "\"{endpoint}\": https is not supported yet; use http (e.g. a local collector)"
            ))
        }
        _ => return Err(usage()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(usage());
    }
    if uri.query().is_some() {
        return Err(format!("\"{endpoint}\" must not have a query"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_problems;

    const BASE: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
routes: []
"#;

    fn with_tracing(tracing: &str) -> String {
        format!("{BASE}telemetry:\n  tracing:\n{tracing}")
    }

    #[test]
    fn valid_tracing_has_no_problems() {
        let yaml = with_tracing(
            r#"
    otlp:
      endpoint: http://127.0.0.1:4318/prefix
      timeout: 2s
      headers: { x-api-key: secret }
    sampling_ratio: 0.01
    service_name: edge
    resource: { deployment.environment.name: prod }
    batch: { max_queue_size: 100, max_batch_size: 100, schedule_delay: 100ms }
"#,
        );
        assert_problems(&yaml, &[]);
    }

    #[test]
    fn defaults_are_valid() {
        assert_problems(
            &with_tracing("    otlp: { endpoint: \"http://collector:4318\" }\n"),
            &[],
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let yaml = with_tracing(
            r#"
    otlp:
      endpoint: ftp://collector:4318
      timeout: 0s
      headers: { "bad header": "x" }
    sampling_ratio: 1.5
    service_name: " "
    resource: { service.name: other }
    batch: { max_queue_size: 10, max_batch_size: 20, schedule_delay: 0s }
"#,
        );
        assert_problems(
            &yaml,
            &[
                "telemetry.tracing.otlp.endpoint: \"ftp://collector:4318\" must be an http URL like http://otel-collector:4318",
                "telemetry.tracing.otlp.timeout: must be greater than 0",
                "telemetry.tracing.otlp.headers.bad header: \"bad header\" is not a valid header name",
                "telemetry.tracing.sampling_ratio: must be between 0.0 and 1.0, got 1.5",
                "telemetry.tracing.service_name: must not be empty",
                "telemetry.tracing.resource.service.name: set service.name with telemetry.tracing.service_name",
                "telemetry.tracing.batch.max_batch_size: must not exceed max_queue_size (10), got 20",
                "telemetry.tracing.batch.schedule_delay: must be greater than 0",
            ],
        );
    }

    #[test]
    fn endpoint_forms() {
        let cases = [
            ("https://collector:4318", "\"https://collector:4318\": https is not supported yet; use http (e.g. a local collector)"),
            ("collector:4318", "\"collector:4318\" must be an http URL like http://otel-collector:4318"),
            ("http://collector:4318/?a=b", "\"http://collector:4318/?a=b\" must not have a query"),
        ];
        for (endpoint, message) in cases {
            let yaml = with_tracing(&format!("    otlp: {{ endpoint: \"{endpoint}\" }}\n"));
            assert_problems(
                &yaml,
                &[&format!("telemetry.tracing.otlp.endpoint: {message}")],
            );
        }
    }

    #[test]
    fn negative_ratio_and_empty_queue() {
        let yaml = with_tracing(
            "    sampling_ratio: -0.1\n    batch: { max_queue_size: 0, max_batch_size: 0 }\n",
        );
        assert_problems(
            &yaml,
            &[
                "telemetry.tracing.sampling_ratio: must be between 0.0 and 1.0, got -0.1",
                "telemetry.tracing.batch.max_queue_size: must be at least 1, got 0",
                "telemetry.tracing.batch.max_batch_size: must be at least 1, got 0",
            ],
        );
    }

    #[test]
    fn header_values_are_not_repeated() {
        let yaml = with_tracing(
            "    otlp:\n      endpoint: http://c:4318\n      headers: { authorization: \"a\\u0001b\" }\n",
        );
        assert_problems(
            &yaml,
            &["telemetry.tracing.otlp.headers.authorization: is not a valid header value (control characters are not allowed)"],
        );
    }
}
