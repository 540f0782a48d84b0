use service_runtime::{Service, lifecycle};

#[derive(Service)]
enum Feed {
    Live,
    Replay,
}

#[lifecycle]
impl Feed {}

fn main() {}
