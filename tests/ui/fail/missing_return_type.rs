use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[cleanup]
    async fn disconnect(&mut self) {}

    #[health]
    async fn upstream(&self) {}
}

fn main() {}
