//! Calling a builder or handle method of a feature that is off is a compile error that
//! names the feature to enable (not rustc's "no method named `serve_health`"). Checked on a small
//! program built with none of the features (`tests/feature_hints/`), as a user's would be.

use std::process::Command;

#[test]
fn a_method_of_a_feature_that_is_off_says_which_feature_to_enable() {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/feature_hints/Cargo.toml"
    );
    // Its own target directory: the features differ from the workspace's build.
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/target/feature-hints");
    let output = Command::new(env!("CARGO"))
        .args([
            "check",
            "--quiet",
            "--offline",
            "--message-format=short",
            "--manifest-path",
            manifest,
        ])
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the fixture must not build:\n{stderr}"
    );
    for feature in ["http", "metrics", "systemd", "axum"] {
        let message = format!("this method needs the `{feature}` feature of `service-runtime`");
        assert!(
            stderr.contains(&message),
            "no error names feature `{feature}`:\n{stderr}"
        );
    }
    // One error per call: the three builder methods, and the handle's probe_address,
    // probe_service and probe_router.
    let errors = stderr
        .matches("error[E0277]: this method needs the `")
        .count();
    assert_eq!(errors, 6, "{stderr}");
    assert!(!stderr.contains("no method named"), "{stderr}");
}
