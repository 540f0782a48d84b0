use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle(?Send, crate = service_runtime, ?Send)]
impl Feed {}

fn main() {}
