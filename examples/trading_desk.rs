//! A small trading desk under a supervisor: the design note's stream-processing
//! platform in five services.
//!
//! ```text
//! market_feed ──ticks──► strategy ──signals──► risk ──orders──► order_gateway
//!                                                       └──────► audit_log
//! ```
//!
//! `strategy` depends on `market_feed`, `risk` on `strategy`, `order_gateway` on `risk`;
//! `audit_log` depends on nothing, so it starts in parallel with `market_feed`. Data
//! flows through `tokio::sync::broadcast` channels: each stage subscribes when its run
//! loop starts, so a restarted stage simply picks up the stream again, and signals
//! `ready` once subscribed, so it is `running` (and what depends on it starts) only when
//! it can no longer miss a message.
//!
//! The strategy's model "drifts" after every 60 ticks (about 6 s): its run loop returns
//! an error, and the supervisor restarts it, together with the services that depend on
//! it, after a backoff that doubles on each restart (250 ms, 500 ms, 1 s, then 2 s). Its
//! policy allows 5 restarts within 20 s, which a failure every 6 s never reaches.
//!
//! ```sh
//! cargo run --example trading_desk                    # stop with Ctrl-C
//! DEMO_RUN_FOR=15 cargo run --example trading_desk    # or let it stop by itself
//! RUST_LOG=debug cargo run --example trading_desk     # every event of the runtime
//! RUST_LOG=warn cargo run --example trading_desk      # warnings and errors only
//! PROBES_ADDR=127.0.0.1:9000 cargo run --example trading_desk   # probes elsewhere (`off`: none)
//! ```
//!
//! While it runs it serves Kubernetes-style probes and metrics on `127.0.0.1:8080`:
//! `curl -i localhost:8080/readyz` (also `/livez`, `/startupz`, `/health`,
//! `/health?service=strategy`, `/metrics`). Loopback only: `PROBES_ADDR=0.0.0.0:8080`
//! would serve them to every network the machine is on.
//!
//! `kill -HUP <pid>` reloads it: `risk` re-reads its position limit (from the file named
//! by `RISK_LIMIT_FILE`, if set) while every service keeps running.
//!
//! The console reporter (`service_runtime::console`, on stdout here, where the desk's own
//! lines go) prints every status change with the time it took, every restart, the
//! shutdown's progress and the run's summary; the desk adds a health summary every 2 s,
//! as tracing events of its own. On Ctrl-C (SIGINT) or SIGTERM it stops every service in
//! reverse dependency order (`order_gateway`, `risk`, `strategy`, then `market_feed` and
//! `audit_log` together). `main` returns the supervisor's `Report`, which prints one line
//! per restarted service (however often it failed) and its errors on stderr, and sets the
//! exit status: 0 when every service stopped cleanly, 130 when a second Ctrl-C abandoned a
//! stuck shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use service_runtime::console::Console;
use service_runtime::{
    HealthDetail, HealthStatus, Ready, Report, Restart, RestartPolicy, Service, Shutdown,
    Supervisor, SupervisorHandle, lifecycle,
};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, MissedTickBehavior};

/// The strategy's model drifts (its run loop fails) after this many ticks.
const TICKS_PER_MODEL: u64 = 60;
const TICK_INTERVAL: Duration = Duration::from_millis(100);
const SYMBOLS: [(&str, f64); 3] = [("ACME", 101.50), ("GLOBEX", 47.20), ("INITECH", 12.85)];

// ---------------------------------------------------------------------------------------
// What flows through the pipeline.

#[derive(Clone, Copy, Debug)]
struct Tick {
    symbol: &'static str,
    price: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug)]
struct TradeSignal {
    symbol: &'static str,
    side: Side,
    /// Shares, by the strength of the signal.
    quantity: i64,
    price: f64,
}

#[derive(Clone, Copy, Debug)]
struct Order {
    id: u64,
    symbol: &'static str,
    side: Side,
    quantity: i64,
    limit: f64,
}

/// The channels between the stages and the desk's counters, shared by every service.
#[derive(Clone)]
struct Desk {
    ticks: broadcast::Sender<Tick>,
    signals: broadcast::Sender<TradeSignal>,
    orders: broadcast::Sender<Order>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    ticks: AtomicU64,
    signals: AtomicU64,
    approved: AtomicU64,
    rejected: AtomicU64,
    sent: AtomicU64,
    audited: AtomicU64,
}

impl Desk {
    fn new() -> Self {
        Desk {
            ticks: broadcast::channel(1024).0,
            signals: broadcast::channel(256).0,
            orders: broadcast::channel(256).0,
            counters: Arc::default(),
        }
    }
}

fn count(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

/// The next message of a stream; `None` when the run loop should return.
/// A receiver that fell behind skips what it missed.
async fn next<T: Clone>(stream: &mut broadcast::Receiver<T>, shutdown: &Shutdown) -> Option<T> {
    loop {
        tokio::select! {
            () = shutdown.requested() => return None,
            message = stream.recv() => match message {
                Ok(message) => return Some(message),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// The services.

/// Publishes synthetic ticks (a deterministic price wave per symbol) ten times a second.
#[derive(Service)]
#[service(
    name = "market_feed",
    version = "2.3.0",
    start_timeout = "5s",
    stop_timeout = "2s"
)]
struct MarketFeed {
    desk: Desk,
    session: Option<String>,
}

#[lifecycle]
impl MarketFeed {
    #[init]
    async fn connect(&mut self) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(300)).await; // the exchange handshake
        self.session = Some("feed-session-1".into());
        Ok(())
    }

    #[cleanup]
    async fn disconnect(&mut self) -> anyhow::Result<()> {
        self.session = None;
        Ok(())
    }

    #[health(name = "exchange", critical)]
    async fn exchange(&self) -> HealthStatus {
        if self.session.is_some() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        }
    }

    #[run]
    async fn publish(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut step = 0u64;
        loop {
            tokio::select! {
                () = shutdown.requested() => return Ok(()),
                _ = interval.tick() => {}
            }
            let index = (step % SYMBOLS.len() as u64) as usize;
            let (symbol, base) = SYMBOLS[index];
            // Two waves per symbol, out of phase between symbols: deterministic, yet
            // enough movement for the strategy's averages to cross now and then.
            let phase = (step / SYMBOLS.len() as u64) as f64;
            let offset = index as f64;
            let price = base
                * (1.0
                    + 0.01 * (phase * 0.7 + 2.0 * offset).sin()
                    + 0.004 * (phase * 2.9 + offset).sin());
            // No subscriber yet (the strategy is starting or restarting): the tick is lost,
            // as on a real feed.
            let _ = self.desk.ticks.send(Tick { symbol, price });
            count(&self.desk.counters.ticks);
            step += 1;
        }
    }
}

/// Turns ticks into buy and sell signals (a crossover of two moving averages). Its model
/// drifts after every `TICKS_PER_MODEL` ticks: the run loop fails and the supervisor
/// restarts it.
#[derive(Service)]
#[service(
    name = "strategy",
    version = "0.9.1",
    start_timeout = "5s",
    stop_timeout = "2s"
)]
struct Strategy {
    desk: Desk,
    model: Option<&'static str>,
}

#[lifecycle]
impl Strategy {
    #[init]
    async fn load_model(&mut self) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.model = Some("ma-crossover(3, 8)");
        Ok(())
    }

    #[cleanup]
    async fn unload_model(&mut self) -> anyhow::Result<()> {
        self.model = None;
        Ok(())
    }

    #[health(name = "model", critical)]
    async fn model(&self) -> HealthDetail {
        match self.model {
            Some(_) => HealthDetail::healthy(),
            None => HealthDetail::unhealthy("no model loaded"),
        }
    }

    #[run]
    async fn trade(&self, ready: Ready, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut ticks = self.desk.ticks.subscribe();
        // Subscribed: `running` from now on, so nothing sent after the start is missed.
        ready.notify();
        let mut prices: HashMap<&'static str, VecDeque<f64>> = HashMap::new();
        let mut above: HashMap<&'static str, bool> = HashMap::new();
        let mut seen = 0u64;
        while let Some(tick) = next(&mut ticks, &shutdown).await {
            seen += 1;
            if seen == TICKS_PER_MODEL {
                bail!("model drifted after {seen} ticks; recalibration needed");
            }
            let window = prices.entry(tick.symbol).or_default();
            window.push_back(tick.price);
            if window.len() > 8 {
                window.pop_front();
            }
            if window.len() < 8 {
                continue;
            }
            let slow = window.iter().sum::<f64>() / 8.0;
            let fast = window.iter().rev().take(3).sum::<f64>() / 3.0;
            let now_above = fast > slow;
            if above
                .insert(tick.symbol, now_above)
                .is_some_and(|was| was != now_above)
            {
                let side = if now_above { Side::Buy } else { Side::Sell };
                let strength = ((fast - slow).abs() / slow * 400.0) as i64;
                let _ = self.desk.signals.send(TradeSignal {
                    symbol: tick.symbol,
                    side,
                    quantity: 100 * (1 + strength).min(3),
                    price: tick.price,
                });
                count(&self.desk.counters.signals);
            }
        }
        Ok(())
    }
}

/// Checks each signal against a position limit and turns the approved ones into orders.
///
/// The limit is read by init and again on every reload (`kill -HUP`): from the file
/// named by `RISK_LIMIT_FILE` when it is set, else the default of 200 shares. A reload
/// that cannot read the file keeps the limit in force, and the service keeps running.
#[derive(Service)]
#[service(
    name = "risk",
    version = "1.4.0",
    start_timeout = "5s",
    stop_timeout = "2s"
)]
struct Risk {
    desk: Desk,
    /// Largest position allowed per symbol, in shares; 0 until init loaded it.
    limit: AtomicI64,
}

impl Risk {
    const DEFAULT_LIMIT: i64 = 200;

    /// The limit from `RISK_LIMIT_FILE`, or the default.
    async fn read_limit() -> anyhow::Result<i64> {
        let Some(path) = std::env::var_os("RISK_LIMIT_FILE") else {
            return Ok(Self::DEFAULT_LIMIT);
        };
        let text = tokio::fs::read_to_string(&path).await?;
        let limit: i64 = text.trim().parse()?;
        anyhow::ensure!(limit > 0, "the limit must be positive, not {limit}");
        Ok(limit)
    }
}

#[lifecycle]
impl Risk {
    #[init]
    async fn load_limits(&mut self) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.limit
            .store(Self::read_limit().await?, Ordering::Relaxed);
        Ok(())
    }

    #[cleanup]
    async fn release_limits(&mut self) -> anyhow::Result<()> {
        self.limit.store(0, Ordering::Relaxed);
        Ok(())
    }

    #[reload]
    async fn reload_limits(&self) -> anyhow::Result<()> {
        let limit = Self::read_limit().await?;
        let previous = self.limit.swap(limit, Ordering::Relaxed);
        // In the hook's span: the console prints it on risk's line.
        tracing::info!("limit reloaded: {previous} -> {limit} shares per symbol");
        Ok(())
    }

    #[health(name = "limits", critical)]
    async fn limits(&self) -> HealthStatus {
        if self.limit.load(Ordering::Relaxed) > 0 {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        }
    }

    #[run]
    async fn check(&self, ready: Ready, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut signals = self.desk.signals.subscribe();
        // Subscribed: `running` from now on, so nothing sent after the start is missed.
        ready.notify();
        let mut positions: HashMap<&'static str, i64> = HashMap::new();
        while let Some(signal) = next(&mut signals, &shutdown).await {
            // Read at each signal: a reload applies from the next one.
            let limit = self.limit.load(Ordering::Relaxed);
            let quantity = match signal.side {
                Side::Buy => signal.quantity,
                Side::Sell => -signal.quantity,
            };
            let position = positions.entry(signal.symbol).or_default();
            if (*position + quantity).abs() > limit {
                count(&self.desk.counters.rejected);
                continue;
            }
            *position += quantity;
            let id = count(&self.desk.counters.approved);
            let _ = self.desk.orders.send(Order {
                id,
                symbol: signal.symbol,
                side: signal.side,
                quantity: quantity.abs(),
                limit: signal.price,
            });
        }
        Ok(())
    }
}

/// Sends approved orders to the exchange over a session opened by init.
#[derive(Service)]
#[service(
    name = "order_gateway",
    version = "3.0.2",
    start_timeout = "5s",
    stop_timeout = "2s"
)]
struct OrderGateway {
    desk: Desk,
    session: Option<String>,
}

#[lifecycle]
impl OrderGateway {
    #[init]
    async fn open_session(&mut self) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.session = Some("fix-session-7".into());
        Ok(())
    }

    #[cleanup]
    async fn close_session(&mut self) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(50)).await; // the logout handshake
        self.session = None;
        Ok(())
    }

    #[health(name = "exchange_session", critical)]
    async fn exchange_session(&self) -> HealthStatus {
        if self.session.is_some() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        }
    }

    #[run]
    async fn send(&self, ready: Ready, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut orders = self.desk.orders.subscribe();
        // Subscribed: `running` from now on, so nothing sent after the start is missed.
        ready.notify();
        while let Some(order) = next(&mut orders, &shutdown).await {
            tokio::time::sleep(Duration::from_millis(5)).await; // the exchange's acknowledgement
            if order.quantity > 0 {
                count(&self.desk.counters.sent);
            }
        }
        Ok(())
    }
}

/// Records every approved order. Depends on no other service, so it starts in parallel
/// with the feed and stops last with it.
#[derive(Service)]
#[service(
    name = "audit_log",
    version = "1.0.0",
    start_timeout = "5s",
    stop_timeout = "2s"
)]
struct AuditLog {
    desk: Desk,
    records: std::sync::Mutex<Vec<Order>>,
}

#[lifecycle]
impl AuditLog {
    #[init]
    async fn open_journal(&mut self) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    #[cleanup]
    async fn flush_journal(&mut self) -> anyhow::Result<()> {
        let records = std::mem::take(self.records.get_mut().expect("journal lock"));
        let buys = records.iter().filter(|o| o.side == Side::Buy).count();
        let notional = records
            .iter()
            .fold(0.0, |sum, o| sum + o.quantity as f64 * o.limit);
        let symbols: std::collections::BTreeSet<_> = records.iter().map(|o| o.symbol).collect();
        let ids = match (records.first(), records.last()) {
            (Some(first), Some(last)) => format!(", ids {}..={}", first.id, last.id),
            _ => String::new(),
        };
        tracing::info!(
            "journal flushed: {} orders ({buys} buys, {} sells) in {} symbols, notional ${notional:.2}{ids}",
            records.len(),
            records.len() - buys,
            symbols.len(),
        );
        Ok(())
    }

    /// Optional: the desk can trade without its journal, degraded.
    #[health(name = "journal", optional)]
    async fn journal(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[run]
    async fn record(&self, ready: Ready, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut orders = self.desk.orders.subscribe();
        // Subscribed: `running` from now on, so nothing sent after the start is missed.
        ready.notify();
        while let Some(order) = next(&mut orders, &shutdown).await {
            self.records.lock().expect("journal lock").push(order);
            count(&self.desk.counters.audited);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The program: supervise, report what happens, stop on a signal.

#[tokio::main]
async fn main() -> Report {
    // Every status change, restart, the shutdown's progress and the summary, on stdout
    // with the desk's own lines; `RUST_LOG` filters them (`info` by default).
    Console::new().stdout().init();

    let desk = Desk::new();
    let permanent = RestartPolicy::new(Restart::Permanent);
    let supervisor = Supervisor::new()
        .add(MarketFeed {
            desk: desk.clone(),
            session: None,
        })
        .restart(permanent)
        .add(AuditLog {
            desk: desk.clone(),
            records: Default::default(),
        })
        .restart(permanent)
        .add(Strategy {
            desk: desk.clone(),
            model: None,
        })
        .depends_on("market_feed")
        .restart(
            permanent
                .max_restarts(5, Duration::from_secs(20))
                .backoff(Duration::from_millis(250), Duration::from_secs(2)),
        )
        .add(Risk {
            desk: desk.clone(),
            limit: AtomicI64::new(0),
        })
        .depends_on("strategy")
        .restart(permanent)
        .add(OrderGateway {
            desk: desk.clone(),
            session: None,
        })
        .depends_on("risk")
        .restart(permanent)
        .shutdown_timeout(Duration::from_secs(10));
    let probes = std::env::var("PROBES_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let supervisor = if probes == "off" {
        supervisor
    } else {
        supervisor.serve_health(probes)
    };

    let handle = supervisor.handle();
    tokio::spawn(print_health(handle.clone(), desk.counters.clone()));
    if let Some(seconds) = std::env::var("DEMO_RUN_FOR")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            tracing::info!("DEMO_RUN_FOR={seconds} elapsed; shutting down");
            handle.shutdown();
        });
    }
    supervisor.run_until_signal().await
}

/// Every 2 s, one line per service: status, health, uptime and restarts.
async fn print_health(handle: SupervisorHandle, counters: Arc<Counters>) {
    let mut interval = tokio::time::interval_at(
        Instant::now() + Duration::from_secs(2),
        Duration::from_secs(2),
    );
    loop {
        interval.tick().await;
        if handle.is_stopping() {
            return;
        }
        let health = handle.health().await;
        if handle.is_stopping() {
            return; // the report was taken before the shutdown began: it is already stale
        }
        let c = &counters;
        let mut text = format!(
            "health: {}  ticks {}, signals {}, orders {} approved / {} rejected / {} sent, {} audited",
            health.status,
            c.ticks.load(Ordering::Relaxed),
            c.signals.load(Ordering::Relaxed),
            c.approved.load(Ordering::Relaxed),
            c.rejected.load(Ordering::Relaxed),
            c.sent.load(Ordering::Relaxed),
            c.audited.load(Ordering::Relaxed),
        );
        for stats in handle.stats() {
            let Some(report) = health.services.get(stats.name.as_str()) else {
                continue;
            };
            // Indented under the console's time stamp.
            text.push_str(&format!(
                "\n            {:<14} {:<9} {:<10} up {:>3}s  restarts {}",
                stats.name, stats.status, report.status, report.uptime, stats.restarts
            ));
            if let Some(reason) = &report.reason {
                text.push_str(&format!("  ({reason})"));
            }
        }
        tracing::info!("{text}");
    }
}
