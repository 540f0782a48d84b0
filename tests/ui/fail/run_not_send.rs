// A `#[run]` hook whose future is not `Send`: reported at the hook's name, like any other
// hook (`hook_not_send.rs`), although the run future is not boxed.
use std::rc::Rc;

use service_runtime::{Service, Shutdown, lifecycle};

#[derive(Service)]
struct Pump;

#[lifecycle]
impl Pump {
    #[run]
    async fn pump(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let batch = Rc::new(());
        shutdown.requested().await;
        drop(batch);
        Ok(())
    }
}

fn main() {}
