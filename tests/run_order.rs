//! A run hook starts only once its service is `running` (issue 18.2): on the
//! multi-thread runtime, a loop that stops its own service at its first poll makes a
//! normal stop of a running service, and its start succeeds.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use service_runtime::{Managed, Service, ServiceStatus, Shutdown, lifecycle};

/// Stops itself from its run loop (in a spawned task, as it should), recording the status
/// its loop saw at its first poll.
#[derive(Service, Default)]
#[service(name = "self_stopper")]
struct SelfStopper {
    me: Arc<OnceLock<Managed<SelfStopper>>>,
    seen: Arc<Mutex<Vec<ServiceStatus>>>,
}

#[lifecycle]
impl SelfStopper {
    #[run]
    async fn run(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        stop_itself(&self.me, &self.seen, shutdown).await
    }
}

/// The same with an init hook, so that its start is an operation rather than inline.
#[derive(Service, Default)]
#[service(name = "self_stopper_init")]
struct SelfStopperInit {
    me: Arc<OnceLock<Managed<SelfStopperInit>>>,
    seen: Arc<Mutex<Vec<ServiceStatus>>>,
}

#[lifecycle]
impl SelfStopperInit {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        tokio::task::yield_now().await;
        Ok(())
    }

    #[run]
    async fn run(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        stop_itself(&self.me, &self.seen, shutdown).await
    }
}

/// The loop of both: records the status, stops its own service from a spawned task, and
/// returns when told to.
async fn stop_itself<S: Service>(
    me: &OnceLock<Managed<S>>,
    seen: &Mutex<Vec<ServiceStatus>>,
    shutdown: Shutdown,
) -> Result<(), std::io::Error> {
    let me = me.get().expect("set before the start").clone();
    seen.lock().unwrap().push(me.status());
    tokio::spawn(async move { me.stop().await });
    shutdown.requested().await;
    Ok(())
}

/// Waits (real time: a multi-thread runtime's clock cannot be paused) until `done`.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

macro_rules! rounds {
    ($service:ident) => {{
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            for round in 0..200 {
                let service = Managed::new($service::default());
                let seen = service.read().await.seen.clone();
                let _ = service.read().await.me.set(service.clone());
                let mut changes = service.subscribe();
                // Started from a worker (as a supervisor does) in even rounds, from
                // `block_on`'s thread in odd ones: the loop's task then goes to the
                // shared queue, where an idle worker picks it up at once.
                let started = if round % 2 == 0 {
                    let starter = service.clone();
                    tokio::spawn(async move { starter.start().await })
                        .await
                        .unwrap()
                } else {
                    service.start().await
                };
                started.unwrap_or_else(|error| panic!("round {round}: {error}"));
                eventually("the loop stops its service", || {
                    service.status() == ServiceStatus::Stopped
                })
                .await;
                assert_eq!(
                    *seen.lock().unwrap(),
                    [ServiceStatus::Running],
                    "round {round}"
                );
                let mut history = Vec::new();
                while let Some(change) = changes.try_recv() {
                    history.push((change.from, change.to));
                }
                use ServiceStatus::{Running, Starting, Stopped, Stopping};
                assert_eq!(
                    history,
                    [
                        (Stopped, Starting),
                        (Starting, Running),
                        (Running, Stopping),
                        (Stopping, Stopped)
                    ],
                    "round {round}"
                );
            }
        });
    }};
}

#[test]
fn a_loop_that_stops_its_own_service_sees_it_running_inline_start() {
    rounds!(SelfStopper);
}

#[test]
fn a_loop_that_stops_its_own_service_sees_it_running_after_an_init_hook() {
    rounds!(SelfStopperInit);
}
