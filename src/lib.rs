//! The workspace's top-level package: integration tests, UI tests and examples.
//!
//! Its only item is the README, compiled as documentation so that every Rust example
//! in it is a doctest run by `cargo test --workspace`.
#![doc = include_str!("../README.md")]
