use service_runtime::{Managed, Service, lifecycle};

#[derive(Service)]
struct Child;

#[lifecycle]
impl Child {}

#[derive(Service)]
struct Feed {
    #[service(componnet)]
    child: Managed<Child>,
}

#[lifecycle]
impl Feed {}

fn main() {}
