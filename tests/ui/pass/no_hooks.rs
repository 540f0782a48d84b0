// A service without hooks, and the defaults of every `#[service]` key.
use service_runtime::{
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, Managed, Service,
    lifecycle,
};

#[derive(Service)]
struct HTTPServer {
    port: u16,
}

#[lifecycle]
impl HTTPServer {}

fn main() {
    let config = HTTPServer::config();
    assert_eq!(config.name, "http_server");
    // The version of the crate that derives, not the runtime's.
    assert_eq!(config.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(config.start_timeout, DEFAULT_START_TIMEOUT);
    assert_eq!(config.stop_timeout, DEFAULT_STOP_TIMEOUT);
    assert_eq!(config.health_timeout, DEFAULT_HEALTH_TIMEOUT);
    let server = HTTPServer { port: 8080 };
    assert_eq!(server.port, 8080);
    let _ = Managed::new(server);
}
