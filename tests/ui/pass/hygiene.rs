// The generated code names everything by absolute path: it compiles in a module without
// the prelude and beside user items that shadow prelude and runtime names.
#![no_implicit_prelude]

mod shadowing {
    #![allow(dead_code)]

    use ::service_runtime::{HealthStatus, Managed, Service as DeriveService, Shutdown, lifecycle};

    struct Result;
    struct Option;
    struct Some;
    struct None;
    struct Ok;
    struct Box;
    struct Vec;
    struct Send;
    struct Sync;
    mod core {}
    mod service_runtime {}

    #[derive(DeriveService)]
    struct Shadowed {
        #[service(component)]
        child: Managed<Child>,
    }

    #[lifecycle]
    impl Shadowed {
        #[init]
        async fn connect(&mut self) -> ::std::result::Result<(), ::std::io::Error> {
            ::std::result::Result::Ok(())
        }

        #[health(timeout = "1s")]
        async fn upstream(&self) -> HealthStatus {
            HealthStatus::Healthy
        }

        #[run]
        async fn pump(&self, shutdown: Shutdown) -> ::std::result::Result<(), ::std::io::Error> {
            shutdown.requested().await;
            ::std::result::Result::Ok(())
        }
    }

    #[derive(DeriveService)]
    struct Child;

    #[lifecycle]
    impl Child {}

    pub fn build() {
        let _ = Managed::new(Shadowed {
            child: Managed::new(Child),
        });
    }
}

fn main() {
    // A service local to a function body.
    #[derive(::service_runtime::Service)]
    struct Local;

    #[::service_runtime::lifecycle]
    impl Local {
        #[health]
        async fn ok(&self) -> ::service_runtime::HealthStatus {
            ::service_runtime::HealthStatus::Healthy
        }
    }

    shadowing::build();
    let _ = ::service_runtime::Managed::new(Local);
}
