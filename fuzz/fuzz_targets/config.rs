//! Config text through what `portcullis check` and `portcullis run` do with it: `${VAR}`
//! substitution, parsing, validation (`config::from_str_with`, what `check` runs), then
//! `Runtime::compile` (what `run` and the tests' gateways run). Never panics, and a config
//! that validation accepts compiles: `check` never accepts what `run` refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::{self, schema::RateLimitAlgorithm, validate::MAX_KEYS};
use portcullis::policy::ratelimit::Registry;
use portcullis::runtime::Runtime;

/// Rate-limit keys the harness lets one input allocate (32 bytes each). Validation bounds
/// each policy (`MAX_KEYS`, about 320 MB); a valid config whose policies add up to more than
/// this is not compiled, as it would only make the fuzzer slow or hit its memory limit. A
/// policy past `MAX_KEYS` is always compiled: validation must have refused it.
const HARNESS_MAX_KEYS: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |name: &str| (name == "PORT").then(|| "8080".to_string());
    let Ok(config) = config::from_str_with(text, &lookup) else {
        return;
    };
    let stores = config
        .rate_limits
        .iter()
        .filter(|rl| rl.algorithm != RateLimitAlgorithm::Concurrency);
    let too_big = stores.clone().any(|rl| rl.max_keys > MAX_KEYS);
    let keys = stores.map(|rl| rl.max_keys).fold(0, usize::saturating_add);
    if keys > HARNESS_MAX_KEYS && !too_big {
        return;
    }
    if let Err(e) = Runtime::compile(&config, &Registry::new()) {
        panic!("validation accepted a config that does not compile: {e:#}\n{text}");
    }
});
