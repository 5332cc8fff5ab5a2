//! End-to-end tests: one integration binary.
