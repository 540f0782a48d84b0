//! The services measured: no-op derived services, and services made of many health checks.

use std::time::Duration;

use service_runtime::{HealthStatus, Service, Shutdown, lifecycle};

/// A derived service without hooks: all its cost is the runtime's.
#[derive(Service)]
#[service(name = "noop")]
pub struct Noop;

#[lifecycle]
impl Noop {}

/// One no-op init hook.
#[derive(Service)]
#[service(name = "with_init")]
pub struct WithInit;

#[lifecycle]
impl WithInit {
    #[init]
    async fn init(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

/// A run loop that waits for shutdown: a task per service, as the hand-written baseline
/// and tokio-graceful-shutdown's subsystems have.
#[derive(Service)]
#[service(name = "with_run")]
pub struct WithRun;

#[lifecycle]
impl WithRun {
    #[run]
    async fn run(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

/// The demo's shape of service: a run loop until shutdown, a no-op cleanup, a health check.
#[derive(Service)]
#[service(name = "worker", stop_timeout = "5s")]
pub struct Worker;

#[lifecycle]
impl Worker {
    #[cleanup]
    async fn cleanup(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[health(name = "upstream")]
    async fn upstream(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[run]
    async fn run(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

/// One instant health check.
#[derive(Service)]
#[service(name = "one_check")]
pub struct OneCheck;

#[lifecycle]
impl OneCheck {
    #[health]
    async fn check(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

/// One health check of 10 ms.
#[derive(Service)]
#[service(name = "one_slow_check")]
pub struct OneSlowCheck;

#[lifecycle]
impl OneSlowCheck {
    #[health]
    async fn check(&self) -> HealthStatus {
        tokio::time::sleep(CHECK_DELAY).await;
        HealthStatus::Healthy
    }
}

/// How long each slow check takes.
pub const CHECK_DELAY: Duration = Duration::from_millis(10);

/// Calls `$callback!($($args)*; <100 identifiers>)`: macro_rules cannot make identifiers.
macro_rules! with_100_idents {
    ($callback:ident!($($args:tt)*)) => {
        $callback! {$($args)*;
            h00 h01 h02 h03 h04 h05 h06 h07 h08 h09 h10 h11 h12 h13 h14 h15 h16 h17 h18 h19
            h20 h21 h22 h23 h24 h25 h26 h27 h28 h29 h30 h31 h32 h33 h34 h35 h36 h37 h38 h39
            h40 h41 h42 h43 h44 h45 h46 h47 h48 h49 h50 h51 h52 h53 h54 h55 h56 h57 h58 h59
            h60 h61 h62 h63 h64 h65 h66 h67 h68 h69 h70 h71 h72 h73 h74 h75 h76 h77 h78 h79
            h80 h81 h82 h83 h84 h85 h86 h87 h88 h89 h90 h91 h92 h93 h94 h95 h96 h97 h98 h99}
    };
}

/// A service with one `#[health]` check per identifier, each evaluating `$body`.
macro_rules! checks_service {
    ($name:ident, $service:literal, $body:block; $($check:ident)*) => {
        #[derive(Service)]
        #[service(name = $service)]
        pub struct $name;

        #[lifecycle]
        impl $name {
            $(
                #[health]
                async fn $check(&self) -> HealthStatus $body
            )*
        }
    };
}

with_100_idents!(checks_service!(Instant100, "instant100", {
    HealthStatus::Healthy
}));
with_100_idents!(checks_service!(Slow100, "slow100", {
    tokio::time::sleep(CHECK_DELAY).await;
    HealthStatus::Healthy
}));

/// A service in the fewest words: a wrapper to name many instances of one type.
pub fn named<S: Service>(service: S, name: String) -> service_runtime::Managed<S> {
    service_runtime::Managed::with_config(service, S::config().name(name))
}
