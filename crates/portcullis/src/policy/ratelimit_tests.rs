//! Unit tests of rate-limit policies with paused time.
