use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle(?Sync)]
impl Feed {}

#[derive(Service)]
struct Cache;

#[lifecycle(?Send, ?Unpin)]
impl Cache {}

fn main() {}
