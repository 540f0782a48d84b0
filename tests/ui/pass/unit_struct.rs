// A unit struct is a service, and so is a struct with no fields.
use service_runtime::{Managed, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Ticker;

#[lifecycle]
impl Ticker {
    // A run hook may ignore the shutdown signal: the runtime cancels it on stop.
    #[run]
    async fn tick(&self) -> Result<(), std::io::Error> {
        std::future::pending().await
    }
}

#[derive(Service)]
#[service(name = "empty_braces")]
struct Empty {}

#[lifecycle]
impl Empty {
    #[run]
    async fn wait(&self, _: Shutdown) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {
    assert_eq!(Ticker::config().name, "ticker");
    assert_eq!(Empty::config().name, "empty_braces");
    let _ = Managed::new(Ticker);
    let _ = Managed::new(Empty {});
}
