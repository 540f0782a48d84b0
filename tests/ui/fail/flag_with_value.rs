use service_runtime::{Managed, Service, lifecycle};

#[derive(Service)]
struct Child;

#[lifecycle]
impl Child {}

#[derive(Service)]
struct Feed {
    #[service(component = true)]
    child: Managed<Child>,
}

#[lifecycle]
impl Feed {}

fn main() {}
