//! Type-erased services: the handle a parent keeps on a component and a supervisor on
//! each of its services ([`ErasedService`]), and the object-safe trait behind it.

use super::*;

/// A type-erased managed service (a component, or an entry of a supervisor): a handle,
/// as a [`Managed`] is.
#[doc(hidden)]
pub struct ErasedService(pub(crate) Arc<dyn DynService>);

impl Clone for ErasedService {
    fn clone(&self) -> Self {
        self.0.add_handle();
        ErasedService(self.0.clone())
    }
}

impl Drop for ErasedService {
    fn drop(&mut self) {
        self.0.release_handle();
    }
}

/// What a start or stop of a type-erased service gives when it begins: its outcome when
/// it needed no waiting, or the rest of it.
pub(crate) type Begun<'a> = Result<Result<(), ServiceError>, Rest<'a>>;

/// The rest of a type-erased start or stop: the wait for a run stop it began, inline
/// (the stop of most services with a run loop), or any other wait, boxed.
pub(crate) enum Rest<'a> {
    RunStop {
        service: &'a dyn DynService,
        progress: RunStopProgress,
    },
    Boxed(BoxFuture<'a, Result<(), ServiceError>>),
}

impl Future for Rest<'_> {
    type Output = Result<(), ServiceError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        // Every field is `Unpin`.
        match self.get_mut() {
            Rest::RunStop { service, progress } => service.poll_run_stop(progress, cx),
            Rest::Boxed(rest) => rest.as_mut().poll(cx),
        }
    }
}

impl Drop for Rest<'_> {
    fn drop(&mut self) {
        if let Rest::RunStop { service, progress } = self {
            service.run_stop_wait_dropped(progress);
        }
    }
}

/// The future of a type-erased start or stop: one that needs no waiting (most do)
/// completes at its first poll without allocating; only one that must await something
/// other than its own run stop is boxed.
pub(crate) struct ErasedOp<'a> {
    pub(super) service: &'a dyn DynService,
    /// A start (`true`) or a stop.
    pub(super) start: bool,
    pub(super) rest: Option<Rest<'a>>,
}

impl Future for ErasedOp<'_> {
    type Output = Result<(), ServiceError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        let this = self.get_mut();
        let rest = match &mut this.rest {
            Some(rest) => rest,
            // Begun at the first poll, as a lazy future would.
            None => {
                let begun = if this.start {
                    this.service.start_now()
                } else {
                    this.service.stop_now()
                };
                match begun {
                    Ok(outcome) => return Poll::Ready(outcome),
                    Err(rest) => this.rest.insert(rest),
                }
            }
        };
        Pin::new(rest).poll(cx)
    }
}

pub(crate) trait DynService: Send + Sync {
    /// The name, shared (made on first use).
    fn name(&self) -> &Arc<str>;
    /// The name, without making it shared.
    fn name_str(&self) -> &str;
    fn status(&self) -> ServiceStatus;
    /// What [`Managed::start`] does up to its first wait.
    fn start_now(&self) -> Begun<'_>;
    /// What [`Managed::stop`] does up to its first wait.
    fn stop_now(&self) -> Begun<'_>;
    /// Polls the wait for a run stop that [`stop_now`](Self::stop_now) began.
    fn poll_run_stop(
        &self,
        progress: &mut RunStopProgress,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>>;
    /// The wait for a run stop that [`stop_now`](Self::stop_now) began is dropped.
    fn run_stop_wait_dropped(&self, progress: &RunStopProgress);
    fn health(&self) -> BoxFuture<'_, HealthReport>;
    fn add_subscriber(&self, subscriber: Subscriber);
    /// Joins a supervisor as its entry `index`: counted in `tally` from its current
    /// status, and its changes posted there while the supervisor runs.
    fn join(&self, index: usize, tally: &Arc<StatusTally>);
    /// One more handle ([`ErasedService::clone`]).
    fn add_handle(&self);
    /// One handle less (see [`Inner::release_handle`]).
    fn release_handle(&self);
}

impl dyn DynService + '_ {
    /// Starts the service as [`Managed::start`] does.
    pub(crate) fn start(&self) -> ErasedOp<'_> {
        ErasedOp {
            service: self,
            start: true,
            rest: None,
        }
    }

    /// Stops the service as [`Managed::stop`] does.
    pub(crate) fn stop(&self) -> ErasedOp<'_> {
        ErasedOp {
            service: self,
            start: false,
            rest: None,
        }
    }
}

impl<S: Service> Inner<S> {
    /// A handle on this service (for the type-erased calls, which only have `&self`).
    pub(super) fn managed(&self) -> Managed<S> {
        Managed::counted(
            self.this
                .upgrade()
                .expect("an `Inner` is only reached through a live `Arc`"),
        )
    }
}

impl<S: Service> DynService for Inner<S> {
    fn name(&self) -> &Arc<str> {
        Inner::name(self)
    }

    fn name_str(&self) -> &str {
        &self.name
    }

    fn status(&self) -> ServiceStatus {
        Inner::status(self)
    }

    fn start_now(&self) -> Begun<'_> {
        let managed = self.managed();
        managed.start_now().map_err(|wait| {
            Rest::Boxed(Box::pin(
                async move { managed.awaiting::<START>(wait).await },
            ))
        })
    }

    fn stop_now(&self) -> Begun<'_> {
        let managed = self.managed();
        managed.stop_now().map_err(|wait| match wait {
            Wait::RunStop(progress) => Rest::RunStop {
                service: self,
                progress,
            },
            wait => Rest::Boxed(Box::pin(
                async move { managed.awaiting::<STOP>(wait).await },
            )),
        })
    }

    fn poll_run_stop(
        &self,
        progress: &mut RunStopProgress,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        Inner::poll_run_stop(self, progress, None, cx)
    }

    fn run_stop_wait_dropped(&self, progress: &RunStopProgress) {
        Inner::run_stop_wait_dropped(self, progress);
    }

    fn health(&self) -> BoxFuture<'_, HealthReport> {
        Box::pin(Inner::health(self))
    }

    fn add_subscriber(&self, subscriber: Subscriber) {
        self.lock().subscribers.push(subscriber);
    }

    fn add_handle(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    fn release_handle(&self) {
        Inner::release_handle(self);
    }

    fn join(&self, index: usize, tally: &Arc<StatusTally>) {
        let mut ctl = self.lock();
        // Under the lock that orders transitions: counted once, from its current status.
        if Inner::status(self) != ServiceStatus::Running {
            tally.not_running.fetch_add(1, Ordering::AcqRel);
        }
        // Most services have this one subscriber: room for it alone.
        ctl.subscribers.push(Subscriber::Supervisor {
            index,
            tally: tally.clone(),
        });
    }
}
