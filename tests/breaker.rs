//! The circuit breaker on the paused clock, with concurrent callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use service_runtime::{BreakerError, BreakerState, CircuitBreaker, HealthStatus};

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new("redis")
        .failure_threshold(3)
        .open_for(Duration::from_secs(10))
        .half_open_trials(2)
}

async fn fail(breaker: &CircuitBreaker) -> Result<(), BreakerError<String>> {
    breaker
        .call(async { Err("connection refused".to_owned()) })
        .await
}

async fn succeed(breaker: &CircuitBreaker) -> Result<(), BreakerError<String>> {
    breaker.call(async { Ok(()) }).await
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_it_and_a_success_resets_the_count() {
    let breaker = breaker();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    succeed(&breaker).await.unwrap();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "the success reset the count"
    );
    assert_eq!(breaker.health().status, HealthStatus::Healthy);
    let error = fail(&breaker).await.unwrap_err();
    assert!(!error.is_open(), "the third failure ran: {error}");
    assert_eq!(breaker.state(), BreakerState::Open);

    let ran = AtomicU32::new(0);
    let refused = breaker
        .call(async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(())
        })
        .await
        .unwrap_err();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "fails fast without running the call"
    );
    assert_eq!(
        refused.to_string(),
        "circuit breaker `redis` is open; retry in 10s"
    );
    let health = breaker.health();
    assert_eq!(
        health.status,
        HealthStatus::Degraded,
        "open degrades, never unhealthy"
    );
    assert!(
        health
            .reason
            .unwrap()
            .contains("last failure: connection refused")
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_exactly_the_configured_trials_through_concurrently() {
    let breaker = breaker();
    for _ in 0..3 {
        fail(&breaker).await.unwrap_err();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    let ran = Arc::new(AtomicU32::new(0));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let breaker = breaker.clone();
            let ran = ran.clone();
            tokio::spawn(async move {
                breaker
                    .call(async {
                        ran.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Ok::<_, String>(())
                    })
                    .await
            })
        })
        .collect();
    let mut refused = 0;
    for caller in callers {
        if let Err(error) = caller.await.unwrap() {
            assert!(error.is_open());
            refused += 1;
        }
    }
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "exactly half_open_trials calls ran"
    );
    assert_eq!(refused, 8);
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "both trials succeeded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_it_again_for_a_full_period() {
    let breaker = breaker();
    for _ in 0..3 {
        fail(&breaker).await.unwrap_err();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(succeed(&breaker).await.unwrap_err().is_open());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    succeed(&breaker).await.unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::HalfOpen,
        "one of two trials so far"
    );
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trial_gives_its_slot_back() {
    let breaker = breaker().half_open_trials(1);
    for _ in 0..3 {
        fail(&breaker).await.unwrap_err();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let hung = tokio::time::timeout(
        Duration::from_secs(1),
        breaker.call(std::future::pending::<Result<(), String>>()),
    )
    .await;
    assert!(hung.is_err(), "the trial was cancelled by its caller");
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn results_of_calls_begun_before_a_transition_do_not_count() {
    let breaker = breaker();
    let slow = {
        let breaker = breaker.clone();
        tokio::spawn(async move {
            breaker
                .call(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, String>(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    for _ in 0..3 {
        fail(&breaker).await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    slow.await.unwrap().unwrap();
    // The slow success began while closed; it does not close the (now half-open) breaker.
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}
