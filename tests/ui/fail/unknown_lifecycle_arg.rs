use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle(krate = service_runtime)]
impl Feed {}

// The opt-out is written `?Send`, as in async-trait.
#[derive(Service)]
struct Cache;

#[lifecycle(Send)]
impl Cache {}

fn main() {}
