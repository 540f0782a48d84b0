// `#[lifecycle(?Send)]`: hooks may hold values that are not `Send` across `.await`.
use std::cell::RefCell;
use std::rc::Rc;

use service_runtime::{HealthStatus, Managed, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Session;

async fn handshake() {}

#[lifecycle(?Send)]
impl Session {
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        let session = Rc::new(());
        handshake().await;
        drop(session);
        Ok(())
    }

    #[cleanup]
    async fn disconnect(&mut self) -> Result<(), std::io::Error> {
        let log = RefCell::new(Vec::new());
        let mut entries = log.borrow_mut();
        handshake().await;
        entries.push("bye");
        Ok(())
    }

    #[health]
    async fn alive(&self) -> HealthStatus {
        let probes = Rc::new(1);
        handshake().await;
        if *probes == 1 {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        }
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let open = Rc::new(());
        shutdown.requested().await;
        drop(open);
        Ok(())
    }
}

// With `crate = path`, in either order.
#[derive(Service)]
struct Before;

#[lifecycle(?Send, crate = service_runtime)]
impl Before {
    #[init]
    async fn init(&mut self) -> Result<(), std::io::Error> {
        let held = Rc::new(());
        handshake().await;
        drop(held);
        Ok(())
    }
}

#[derive(Service)]
struct After;

#[lifecycle(crate = ::service_runtime, ?Send,)]
impl After {
    #[run]
    async fn run(&self) -> Result<(), std::io::Error> {
        let held = Rc::new(());
        handshake().await;
        drop(held);
        Ok(())
    }
}

fn main() {
    let _ = (
        Managed::new(Session),
        Managed::new(Before),
        Managed::new(After),
    );
}
