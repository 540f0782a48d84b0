use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle(krate = service_runtime)]
impl Feed {}

fn main() {}
