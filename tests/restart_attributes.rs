//! The restart keys of `#[service(...)]` fill `ServiceConfig::restart`, and a service
//! without them keeps the runtime's default policy.

use std::time::Duration;

use service_runtime::{Restart, RestartPolicy, Service, lifecycle};

#[derive(Service)]
#[service(
    name = "pump",
    restart = "permanent",
    max_restarts = 7,
    restart_within = "2m",
    backoff = "250ms",
    max_backoff = "20s"
)]
struct Everything;

#[lifecycle]
impl Everything {}

#[derive(Service)]
struct Nothing;

#[lifecycle]
impl Nothing {}

#[test]
fn every_restart_key_reaches_the_policy() {
    let policy = <Everything as Service>::config().restart;
    let expected = RestartPolicy::new(Restart::Permanent)
        .max_restarts(7, Duration::from_secs(120))
        .backoff(Duration::from_millis(250), Duration::from_secs(20));
    assert_eq!(policy, expected);
    assert_eq!(policy.restart, Restart::Permanent);
    assert_eq!(policy.max_restarts, 7);
    assert_eq!(policy.within, Duration::from_secs(120));
    assert_eq!(policy.backoff, Duration::from_millis(250));
    assert_eq!(policy.max_backoff, Duration::from_secs(20));
    // The other keys are untouched by the restart ones.
    assert_eq!(<Everything as Service>::config().name, "pump");
}

#[test]
fn without_restart_keys_the_policy_is_the_default() {
    assert_eq!(
        <Nothing as Service>::config().restart,
        RestartPolicy::new(Restart::Transient)
    );
}

#[derive(Service)]
#[service(restart = "temporary")]
struct Temporary;

#[lifecycle]
impl Temporary {}

#[derive(Service)]
#[service(max_restarts = 0, restart = "transient")]
#[service(restart_within = "5s")]
struct NeverAgain;

#[lifecycle]
impl NeverAgain {}

#[test]
fn keys_left_out_keep_their_defaults() {
    assert_eq!(
        <Temporary as Service>::config().restart,
        RestartPolicy::new(Restart::Temporary)
    );
    assert_eq!(
        <NeverAgain as Service>::config().restart,
        RestartPolicy::new(Restart::Transient).max_restarts(0, Duration::from_secs(5))
    );
}

#[derive(Service)]
#[service(backoff = "20s")]
struct SlowFirst;

#[lifecycle]
impl SlowFirst {}

#[derive(Service)]
#[service(max_backoff = "1s")]
struct LowCap;

#[lifecycle]
impl LowCap {}

#[derive(Service)]
#[service(backoff = "1s", max_backoff = "1s")]
struct Constant;

#[lifecycle]
impl Constant {}

#[test]
fn backoff_alone_and_max_backoff_alone() {
    // A first delay above the default cap raises the cap to it.
    let policy = <SlowFirst as Service>::config().restart;
    assert_eq!(policy.backoff, Duration::from_secs(20));
    assert_eq!(policy.max_backoff, Duration::from_secs(20));

    let policy = <LowCap as Service>::config().restart;
    assert_eq!(policy.backoff, Duration::from_millis(100));
    assert_eq!(policy.max_backoff, Duration::from_secs(1));

    // Equal first and largest delays: a constant backoff.
    let policy = <Constant as Service>::config().restart.jitter(0.0);
    assert_eq!(policy.delay(0), Duration::from_secs(1));
    assert_eq!(policy.delay(5), Duration::from_secs(1));
}
