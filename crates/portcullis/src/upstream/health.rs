//! Active health checks: GET a path on each endpoint; thresholds move endpoints in and out of rotation.
