use std::cell::Cell;

use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed {
    reconnects: Cell<u32>,
}

#[lifecycle]
impl Feed {}

fn main() {}
