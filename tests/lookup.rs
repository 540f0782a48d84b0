//! `SupervisorHandle::get` and `get_named`: a typed handle on a supervisor's service, the
//! same service the supervisor runs.

use service_runtime::{LookupError, Managed, Service, ServiceStatus, Supervisor, lifecycle};

#[derive(Service)]
struct MarketFeed;

#[lifecycle]
impl MarketFeed {}

#[derive(Service)]
struct Strategy;

#[lifecycle]
impl Strategy {}

#[derive(Service)]
struct Journal;

#[lifecycle]
impl Journal {}

fn feed(name: &'static str) -> Managed<MarketFeed> {
    Managed::with_config(MarketFeed, MarketFeed::config().name(name))
}

#[tokio::test]
async fn get_finds_the_one_service_of_a_type_and_it_is_the_one_the_supervisor_runs() {
    let supervisor = Supervisor::new().add(MarketFeed).add(Strategy);
    let handle = supervisor.handle();

    let feed = handle.get::<MarketFeed>().unwrap();
    let strategy = handle.get_named::<Strategy>("strategy").unwrap();

    assert_eq!(feed.name(), "market_feed");
    assert_eq!(strategy.name(), "strategy");
    // A handle on the service itself: what it does, the supervisor sees.
    feed.start().await.unwrap();
    assert_eq!(
        handle.statuses(),
        [
            ("market_feed".to_owned(), ServiceStatus::Running),
            ("strategy".to_owned(), ServiceStatus::Stopped)
        ]
    );
    feed.stop().await.unwrap();
}

#[test]
fn a_type_or_name_it_does_not_have_is_not_found() {
    let handle = Supervisor::new().add(MarketFeed).handle();

    let by_type = handle.get::<Journal>().unwrap_err();
    let by_name = handle.get_named::<MarketFeed>("feed").unwrap_err();

    assert!(matches!(by_type, LookupError::NotFound { name: None, .. }));
    assert_eq!(
        by_type.to_string(),
        "the supervisor has no service of type `lookup::Journal`"
    );
    assert_eq!(
        by_name.to_string(),
        "the supervisor has no service named `feed`"
    );
}

#[test]
fn two_of_one_type_are_ambiguous_by_type_and_found_by_name() {
    let handle = Supervisor::new()
        .add(feed("nyse"))
        .add(Strategy)
        .add(feed("lse"))
        .handle();

    let error = handle.get::<MarketFeed>().unwrap_err();

    assert_eq!(
        error,
        LookupError::Ambiguous {
            type_name: "lookup::MarketFeed",
            names: vec!["nyse".to_owned(), "lse".to_owned()],
        }
    );
    assert_eq!(
        error.to_string(),
        "the supervisor has 2 services of type `lookup::MarketFeed` (`nyse`, `lse`): name one with `get_named`"
    );
    assert_eq!(handle.get_named::<MarketFeed>("lse").unwrap().name(), "lse");
    assert_eq!(
        handle
            .get_named::<Strategy>("nyse")
            .unwrap_err()
            .to_string(),
        "the service named `nyse` is not a `lookup::Strategy`"
    );
}
