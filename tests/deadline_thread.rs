//! The process's deadline thread ("service-deadlines") survives what it runs: here a
//! tracing layer that panics at the first event the thread emits (the timed-out stop's
//! log). The expiry is tried again a second later, and every other deadline still holds.
//! A test binary of its own: it installs a global subscriber.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use service_runtime::{Managed, Service, ServiceStatus, Shutdown, lifecycle};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Service, Default)]
#[service(name = "stuck", stop_timeout = "50ms")]
struct Stuck;

#[lifecycle]
impl Stuck {
    #[run]
    async fn spin(&self, _shutdown: Shutdown) -> Result<(), std::io::Error> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

static PANICKED: AtomicBool = AtomicBool::new(false);

/// Panics once, at the first event emitted on the deadline thread.
struct PanicOnce;
impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicOnce {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if std::thread::current().name() == Some("service-deadlines")
            && !PANICKED.swap(true, Ordering::SeqCst)
        {
            panic!("subscriber bug");
        }
    }
}

#[test]
fn a_panic_on_the_deadline_thread_delays_one_expiry_and_disables_nothing() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PanicOnce))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let first = Managed::new(Stuck);
    runtime.block_on(first.start()).unwrap();
    // Dropped after one poll: the list alone is to end it.
    runtime.block_on(async {
        let mut stop = std::pin::pin!(first.stop());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(stop.as_mut().poll(&mut cx).is_pending());
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(PANICKED.load(Ordering::SeqCst));

    // A second, unrelated service: its stop should end after 50 ms.
    let second = Managed::new(Stuck);
    runtime.block_on(second.start()).unwrap();
    let began = Instant::now();
    let ended = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(2), second.stop()).await });
    assert!(
        ended.is_ok(),
        "stop of an unrelated service still {:?} after {:?} (deadline 50ms); first: {:?}",
        second.status(),
        began.elapsed(),
        first.status(),
    );
    assert_eq!(second.status(), ServiceStatus::Error);

    // The first stop, whose expiry panicked, ended at the retry.
    let began = Instant::now();
    while first.status() != ServiceStatus::Error {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the first stop never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(first.last_error().unwrap().is_timeout());
}
