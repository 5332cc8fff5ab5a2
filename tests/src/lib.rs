//! End-to-end test harness lives in `it/`.
