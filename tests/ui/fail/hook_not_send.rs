// The fix, for a hook that must hold a non-`Send` value across `.await`, is the opt-out
// `#[lifecycle(?Send)]` (see `pass/not_send_opt_out.rs`); rustc's message on the `Send`
// bound cannot mention it, so the `#[lifecycle]` docs do.
use std::rc::Rc;

use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

async fn handshake() {}

#[lifecycle]
impl Feed {
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        let session = Rc::new(());
        handshake().await;
        drop(session);
        Ok(())
    }
}

fn main() {}
