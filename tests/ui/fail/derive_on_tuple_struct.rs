use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed(u32, String);

#[lifecycle]
impl Feed {}

fn main() {}
