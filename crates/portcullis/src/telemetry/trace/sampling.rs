//! The sampling decision for a new trace: the comparison the SDK's `TraceIdRatioBased`
//! sampler makes, with its bound computed once instead of on every request (the SDK's
//! `ShouldSample` also builds a `SamplingResult` the gateway would throw away). Child spans
//! are still decided by the provider's own `ParentBased` sampler.

use opentelemetry::trace::TraceId;

/// `TraceIdRatioBased(ratio)` for the root of a new trace.
#[derive(Debug, Clone, Copy)]
pub struct RatioSampler {
    /// A trace is sampled when the lower 64 bits of its id, shifted right once, are below
    /// this: ratio × 2^63, or `u64::MAX` (above every shifted id) for a ratio of 1 or more.
    bound: u64,
}

impl RatioSampler {
    pub fn new(ratio: f64) -> Self {
        let bound = if ratio >= 1.0 {
            u64::MAX
        } else {
            // As the SDK computes it: a negative (or NaN) ratio samples nothing.
            (ratio.max(0.0) * (1u64 << 63) as f64) as u64
        };
        Self { bound }
    }

    /// Whether a new trace with this id is sampled.
    pub fn samples(&self, trace_id: TraceId) -> bool {
        let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
        low >> 1 < self.bound
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

    use super::*;

    /// Decides as the SDK's sampler does, for the ratios at the edges and between, on ids
    /// around each bound and spread over the range.
    #[test]
    fn decides_as_the_sdk_sampler() {
        let ratios = [
            0.0,
            1e-9,
            0.01,
            0.25,
            0.5,
            0.999_999,
            1.0,
            1.5,
            -0.5,
            f64::NAN,
        ];
        let mut ids: Vec<u128> = vec![0, 1, 2, 3, u128::MAX, u128::from(u64::MAX)];
        for ratio in ratios {
            let bound = RatioSampler::new(ratio).bound;
            for low in [bound.wrapping_sub(1), bound, bound.wrapping_add(1)] {
                for shifted in [low.wrapping_mul(2), low.wrapping_mul(2).wrapping_add(1)] {
                    ids.push(0xabcd_u128 << 64 | u128::from(shifted));
                }
            }
        }
        let mut x: u128 = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c;
        for _ in 0..2000 {
            // A fixed, well-spread sequence (an LCG step and a xorshift).
            x = x
                .wrapping_mul(0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645)
                .wrapping_add(0x5851_f42d_4c95_7f2d_1405_7b7e_f767_814f);
            ids.push(x ^ (x >> 67));
        }
        for ratio in ratios {
            let ours = RatioSampler::new(ratio);
            let sdk = Sampler::TraceIdRatioBased(ratio);
            for &id in &ids {
                let id = TraceId::from(id);
                let expected = sdk
                    .should_sample(None, id, "GET", &SpanKind::Server, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(ours.samples(id), expected, "ratio {ratio} id {id}");
            }
        }
    }
}
