use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init(timeout = "18446744073709551615h")]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
