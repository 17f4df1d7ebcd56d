//! Load balancers: smooth weighted round robin, least-request (P2C) and Maglev consistent hashing.
