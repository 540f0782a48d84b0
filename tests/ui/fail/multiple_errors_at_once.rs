use service_runtime::{Managed, Service, lifecycle};

#[derive(Service)]
struct Child;

#[lifecycle]
impl Child {}

#[derive(Service)]
#[service(nmae = "feed", stop_timeout = "5 s")]
struct Feed {
    #[service(component, optinal)]
    child: Managed<Child>,
}

#[lifecycle]
impl Feed {}

fn main() {}
