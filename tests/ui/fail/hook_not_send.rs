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
