//! Test harness for portcullis: in-process origins, clients, and an in-process gateway.
