// `crate = path` on both macros: the runtime is reachable only under another name.
extern crate service_runtime as rt;

#[derive(rt::Service)]
#[service(crate = rt)]
struct Renamed {
    #[service(component)]
    child: rt::Managed<Child>,
}

#[rt::lifecycle(crate = rt)]
impl Renamed {
    #[init]
    async fn init(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[health]
    async fn ping(&self) -> rt::HealthStatus {
        rt::HealthStatus::Healthy
    }

    #[run]
    async fn run(&self, shutdown: rt::Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

// serde's spelling, a string, is accepted too.
#[derive(rt::Service)]
#[service(crate = "rt")]
struct Child;

#[rt::lifecycle(crate = "rt")]
impl Child {}

fn main() {
    assert_eq!(<Renamed as rt::Service>::config().name, "renamed");
    let _ = rt::Managed::new(Renamed {
        child: rt::Managed::new(Child),
    });
}
