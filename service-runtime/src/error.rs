//! Errors: every one names the service, the hook and the cause.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::status::TransitionError;

/// The error type hooks may return, after conversion: any `std::error::Error`,
/// `anyhow::Error`, `String` or `&str` converts into it.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The kind of a lifecycle hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// An `#[init]` hook.
    Init,
    /// A `#[cleanup]` hook.
    Cleanup,
    /// The `#[run]` hook.
    Run,
    /// A `#[health]` check.
    Health,
    /// A `#[reload]` hook.
    Reload,
}

impl HookKind {
    /// The lower-case name used in messages (`init`, `cleanup`, `run`, `health`, `reload`).
    pub const fn as_str(self) -> &'static str {
        match self {
            HookKind::Init => "init",
            HookKind::Cleanup => "cleanup",
            HookKind::Run => "run",
            HookKind::Health => "health",
            HookKind::Reload => "reload",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a hook failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HookFailure {
    /// The hook returned `Err`.
    Error(Arc<dyn StdError + Send + Sync + 'static>),
    /// The hook panicked; the panic was caught and its message kept.
    Panic(String),
    /// The hook did not finish within its timeout; its future was dropped.
    Timeout(Duration),
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookFailure::Error(error) => {
                let mut message = error.to_string();
                let mut source = error.source();
                while let Some(cause) = source {
                    // Many errors repeat their source's message in their own (io errors
                    // wrapped by client libraries do): print each text once.
                    let text = cause.to_string();
                    if !message.contains(&text) {
                        message.push_str(": ");
                        message.push_str(&text);
                    }
                    source = cause.source();
                }
                write!(f, "failed: {message}")
            }
            HookFailure::Panic(message) => write!(f, "panicked: {message}"),
            HookFailure::Timeout(after) => write!(f, "timed out after {after:?}"),
        }
    }
}

/// An error of a managed service. Cheap to clone: every waiter of a shared start or
/// stop receives the same error.
///
/// `Display` names the service, the hook and the whole cause chain, for example
/// ``service `market_feed`: init hook `connect` failed: connection refused``.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// A hook returned `Err`, panicked or timed out.
    Hook {
        /// The service's name.
        service: Arc<str>,
        /// Which kind of hook.
        kind: HookKind,
        /// The hook's method name.
        hook: &'static str,
        /// How it failed.
        failure: HookFailure,
    },
    /// A `#[service(component)]` child failed to start or stop.
    Component {
        /// The parent service's name.
        service: Arc<str>,
        /// The component's name: its field, or `field[i]` for the element `i` of a
        /// `Vec<Managed<S>>` field.
        component: Cow<'static, str>,
        /// The child's own error.
        source: Box<ServiceError>,
    },
    /// Several steps failed while stopping (every cleanup still ran); in order of occurrence.
    Multiple {
        /// The service's name.
        service: Arc<str>,
        /// Each error, in the order they happened.
        errors: Vec<ServiceError>,
    },
    /// `stop()` was called while the service was starting; the start was abandoned.
    StartCancelled {
        /// The service's name.
        service: Arc<str>,
    },
    /// A start or stop was dropped before its end, because the tokio runtime running it
    /// shut down (or it panicked outside any hook); the service is left in `error`.
    Abandoned {
        /// The service's name.
        service: Arc<str>,
        /// `"start"` or `"stop"`.
        operation: &'static str,
    },
    /// A supervisor's shutdown gave up on the service before it stopped (its budget ran
    /// out, or a second signal forced it): its run loop and its hooks in flight were
    /// cancelled (dropped), and no cleanup hook ran after that.
    ShutdownCancelled {
        /// The service's name.
        service: Arc<str>,
        /// The budget that ran out; `None` when a second signal forced the shutdown.
        budget: Option<std::time::Duration>,
        /// Whether the shutdown had asked it to stop (`false`: it never got to it).
        was_stopping: bool,
    },
    /// The state machine refused a transition.
    Transition {
        /// The service's name.
        service: Arc<str>,
        /// The refused transition.
        error: TransitionError,
    },
}

impl ServiceError {
    /// The name of the service the error belongs to.
    pub fn service(&self) -> &str {
        match self {
            ServiceError::Hook { service, .. }
            | ServiceError::Component { service, .. }
            | ServiceError::Multiple { service, .. }
            | ServiceError::StartCancelled { service }
            | ServiceError::Abandoned { service, .. }
            | ServiceError::ShutdownCancelled { service, .. }
            | ServiceError::Transition { service, .. } => service,
        }
    }

    /// The hook that failed (for a component error, the child's hook), if one did.
    pub fn hook(&self) -> Option<(HookKind, &'static str)> {
        match self {
            ServiceError::Hook { kind, hook, .. } => Some((*kind, *hook)),
            ServiceError::Component { source, .. } => source.hook(),
            ServiceError::Multiple { errors, .. } => errors.first().and_then(ServiceError::hook),
            _ => None,
        }
    }

    /// The error a hook returned, for downcasting to the user's own type.
    pub fn hook_cause(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match self {
            ServiceError::Hook {
                failure: HookFailure::Error(error),
                ..
            } => Some(&**error),
            ServiceError::Component { source, .. } => source.hook_cause(),
            ServiceError::Multiple { errors, .. } => {
                errors.iter().find_map(ServiceError::hook_cause)
            }
            _ => None,
        }
    }

    /// Whether the cause was a timeout.
    pub fn is_timeout(&self) -> bool {
        match self {
            ServiceError::Hook { failure, .. } => matches!(failure, HookFailure::Timeout(_)),
            ServiceError::Component { source, .. } => source.is_timeout(),
            _ => false,
        }
    }

    /// Whether the cause was a panic.
    pub fn is_panic(&self) -> bool {
        match self {
            ServiceError::Hook { failure, .. } => matches!(failure, HookFailure::Panic(_)),
            ServiceError::Component { source, .. } => source.is_panic(),
            _ => false,
        }
    }

    /// Every individual error, flattening [`ServiceError::Multiple`].
    pub fn errors(&self) -> Vec<&ServiceError> {
        match self {
            ServiceError::Multiple { errors, .. } => errors.iter().collect(),
            single => vec![single],
        }
    }

    /// One error from several: `None` for none, the error itself for one; `service` names
    /// the service only when there are several (made lazily: most stops have none).
    pub(crate) fn combine(
        service: impl FnOnce() -> Arc<str>,
        mut errors: Vec<ServiceError>,
    ) -> Option<ServiceError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ServiceError::Multiple {
                service: service(),
                errors,
            }),
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Hook {
                service,
                kind,
                hook,
                failure,
            } => write!(f, "service `{service}`: {kind} hook `{hook}` {failure}"),
            ServiceError::Component {
                service,
                component,
                source,
            } => write!(f, "service `{service}`: component `{component}`: {source}"),
            ServiceError::Multiple { service, errors } => {
                write!(f, "service `{service}`: {} errors: ", errors.len())?;
                for (i, error) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "[{}] {error}", i + 1)?;
                }
                Ok(())
            }
            ServiceError::StartCancelled { service } => {
                write!(f, "service `{service}`: start cancelled by stop()")
            }
            ServiceError::Abandoned { service, operation } => write!(
                f,
                "service `{service}`: {operation} abandoned before it finished (its runtime shut down); start it again on a running runtime"
            ),
            ServiceError::ShutdownCancelled {
                service,
                budget,
                was_stopping,
            } => {
                write!(f, "service `{service}`: cancelled when ")?;
                match budget {
                    Some(budget) => write!(f, "the shutdown budget of {budget:?} ran out")?,
                    None => write!(f, "a second signal forced the shutdown")?,
                }
                f.write_str(if *was_stopping {
                    " (it was still stopping)"
                } else {
                    " (the shutdown never got to it)"
                })
            }
            ServiceError::Transition { service, error } => {
                write!(f, "service `{service}`: {error}")
            }
        }
    }
}

// The cause is part of `Display` (so `{}` alone tells the whole story); `source()`
// exposes only nested service errors, to keep chain printers from repeating it.
impl StdError for ServiceError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ServiceError::Transition { error, .. } => Some(error),
            _ => None,
        }
    }
}
