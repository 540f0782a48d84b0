//! The compile-time behaviour of `#[derive(Service)]` and `#[lifecycle]`: every error
//! message, at the token it points to (`tests/ui/fail`), and the inputs that must compile
//! and run (`tests/ui/pass`).
//!
//! After changing a message, regenerate with `TRYBUILD=overwrite cargo test --test ui`
//! and review every changed `.stderr`: its span must point at the user's token.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
