// `anyhow::Error`, `Box<dyn Error + Send + Sync>` and `std::io::Error` as hook errors.
use service_runtime::{Managed, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Loader;

#[lifecycle]
impl Loader {
    #[init]
    async fn load(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::metadata("/").map_err(anyhow::Error::from)?;
        Ok(())
    }

    #[cleanup]
    async fn unload(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }

    #[cleanup]
    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

fn main() {
    let _ = Managed::new(Loader);
}
