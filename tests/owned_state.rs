//! A run loop that owns what it consumes: the `Ok` value of the `#[init(state)]` hook is
//! handed to the `#[run]` hook by value, made again by every start.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::Log;
use service_runtime::{Managed, Ready, Service, ServiceStatus, Shutdown, lifecycle};
use tokio::sync::mpsc;

/// Where the orders come from: each start takes a fresh receiver from it.
struct Broker {
    senders: Mutex<Vec<mpsc::Sender<u32>>>,
}

impl Broker {
    fn subscribe(&self) -> mpsc::Receiver<u32> {
        let (sender, receiver) = mpsc::channel(16);
        self.senders.lock().unwrap().push(sender);
        receiver
    }

    fn latest(&self) -> mpsc::Sender<u32> {
        self.senders.lock().unwrap().last().unwrap().clone()
    }
}

/// Consumes its receiver in the loop: no `Mutex<Option<Receiver>>`.
#[derive(Service)]
struct OrderBook {
    log: Log,
    broker: std::sync::Arc<Broker>,
}

#[lifecycle]
impl OrderBook {
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        self.log.push("init:connect");
        Ok(())
    }

    #[init(state)]
    async fn subscribe(&mut self) -> Result<mpsc::Receiver<u32>, std::io::Error> {
        self.log.push("init:subscribe");
        Ok(self.broker.subscribe())
    }

    #[run]
    async fn consume(
        &self,
        mut orders: mpsc::Receiver<u32>,
        shutdown: Shutdown,
    ) -> Result<(), std::io::Error> {
        loop {
            tokio::select! {
                () = shutdown.requested() => return Ok(()),
                order = orders.recv() => match order {
                    Some(order) => self.log.push(format!("order:{order}")),
                    None => return Ok(()),
                },
            }
        }
    }
}

fn order_book(log: &Log) -> (Managed<OrderBook>, std::sync::Arc<Broker>) {
    let broker = std::sync::Arc::new(Broker {
        senders: Mutex::new(Vec::new()),
    });
    let service = Managed::new(OrderBook {
        log: log.clone(),
        broker: broker.clone(),
    });
    (service, broker)
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_takes_the_value_its_init_state_hook_made_by_value() {
    let log = Log::default();
    let (service, broker) = order_book(&log);

    service.start().await.unwrap();
    broker.latest().send(1).await.unwrap();
    broker.latest().send(2).await.unwrap();
    settle().await;
    service.stop().await.unwrap();

    assert_eq!(
        log.entries(),
        ["init:connect", "init:subscribe", "order:1", "order:2"]
    );
    // The loop owned the receiver and dropped it with its future.
    assert!(broker.latest().is_closed());
}

#[tokio::test(start_paused = true)]
async fn every_start_makes_the_state_again() {
    let log = Log::default();
    let (service, broker) = order_book(&log);

    service.start().await.unwrap();
    service.stop().await.unwrap();
    service.start().await.unwrap();
    broker.latest().send(7).await.unwrap();
    settle().await;

    assert_eq!(broker.senders.lock().unwrap().len(), 2);
    assert_eq!(log.count("init:subscribe"), 2);
    assert_eq!(log.entries().last().map(String::as_str), Some("order:7"));
    service.stop().await.unwrap();
}

/// The state, a `Ready` and no `Shutdown`, in any order.
#[derive(Service)]
struct Replayer {
    log: Log,
}

#[lifecycle]
impl Replayer {
    #[init(state, timeout = "1s")]
    async fn load(&mut self) -> Result<Vec<&'static str>, std::io::Error> {
        Ok(vec!["a", "b"])
    }

    #[run]
    async fn replay(&self, ready: Ready, journal: Vec<&'static str>) -> Result<(), std::io::Error> {
        for entry in journal {
            self.log.push(format!("replayed:{entry}"));
        }
        ready.notify();
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn the_state_comes_with_a_ready_signal_in_any_argument_order() {
    let log = Log::default();
    let service = Managed::new(Replayer { log: log.clone() });

    service.start().await.unwrap();
    // Replayed before `start()` returned: it waited for the signal.
    assert_eq!(log.entries(), ["replayed:a", "replayed:b"]);
    assert_eq!(service.status(), ServiceStatus::Running);
    // No `Shutdown` argument: the stop drops the loop at once.
    service.stop().await.unwrap();
}

/// An `#[init(state)]` hook that fails: no loop, the start fails as any init failure.
#[derive(Service)]
struct Unreachable;

#[lifecycle]
impl Unreachable {
    #[init(state)]
    async fn subscribe(&mut self) -> Result<mpsc::Receiver<u32>, std::io::Error> {
        Err(std::io::Error::other("the broker is unreachable"))
    }

    #[run]
    async fn consume(&self, _orders: mpsc::Receiver<u32>) -> Result<(), std::io::Error> {
        unreachable!("no loop without its state")
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_state_hook_fails_the_start_and_no_loop_runs() {
    let service = Managed::new(Unreachable);

    let error = service.start().await.unwrap_err();

    assert_eq!(
        error.to_string(),
        "service `unreachable`: init hook `subscribe` failed: the broker is unreachable"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
}
