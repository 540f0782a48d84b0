use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn connect<E: Default>(&mut self) -> Result<(), std::io::Error> {
        let _ = E::default();
        Ok(())
    }
}

fn main() {}
