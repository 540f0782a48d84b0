//! Typed lookup of a supervisor's services: [`SupervisorHandle::get`] and
//! [`SupervisorHandle::get_named`], and the [`LookupError`] they fail with.
//!
//! A lookup is for code that has the supervisor's handle but not the service's (a
//! request handler, an admin command, a test); a service that uses another is better
//! given its handle, or what it needs from it, when it is built (see the README's
//! "Reaching other services").

use std::fmt;

use super::SupervisorHandle;
use crate::managed::Managed;
use crate::service::Service;

impl SupervisorHandle {
    /// A handle on the supervisor's one service of type `S` (a clone of the handle it
    /// was added with, or a new one on the same service).
    ///
    /// Fails with [`LookupError::NotFound`] if no service is an `S`, and with
    /// [`LookupError::Ambiguous`] if several are (two feeds of one type under two
    /// names): then [`get_named`](Self::get_named) picks one. Lookups read the list of
    /// services as it is now, and cost a walk of it: keep the handle rather than look it
    /// up per request.
    ///
    /// ```
    /// # use service_runtime::{lifecycle, Service, Supervisor};
    /// #[derive(Service)]
    /// struct MarketFeed;
    /// #[lifecycle]
    /// impl MarketFeed {}
    ///
    /// let supervisor = Supervisor::new().add(MarketFeed);
    /// let feed = supervisor.handle().get::<MarketFeed>().unwrap();
    /// assert_eq!(feed.name(), "market_feed");
    /// ```
    pub fn get<S: Service>(&self) -> Result<crate::Managed<S>, LookupError> {
        let services = self.services();
        let mut found = services.iter().filter_map(Managed::<S>::from_erased);
        let Some(first) = found.next() else {
            return Err(LookupError::NotFound {
                type_name: std::any::type_name::<S>(),
                name: None,
            });
        };
        let others: Vec<String> = found.map(|other| other.name().to_owned()).collect();
        if others.is_empty() {
            return Ok(first);
        }
        let names = std::iter::once(first.name().to_owned())
            .chain(others)
            .collect();
        Err(LookupError::Ambiguous {
            type_name: std::any::type_name::<S>(),
            names,
        })
    }

    /// A handle on the service named `name`, which must be an `S`.
    ///
    /// Fails with [`LookupError::NotFound`] if no service has that name, and with
    /// [`LookupError::WrongType`] if the one that has it is not an `S`.
    pub fn get_named<S: Service>(&self, name: &str) -> Result<crate::Managed<S>, LookupError> {
        let services = self.services();
        let Some(service) = services.iter().find(|service| service.0.name_str() == name) else {
            return Err(LookupError::NotFound {
                type_name: std::any::type_name::<S>(),
                name: Some(name.to_owned()),
            });
        };
        Managed::<S>::from_erased(service).ok_or_else(|| LookupError::WrongType {
            name: name.to_owned(),
            type_name: std::any::type_name::<S>(),
        })
    }
}

/// Why [`SupervisorHandle::get`] or [`SupervisorHandle::get_named`] found no service.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// No service of the type (`name: None`), or none of that name.
    NotFound {
        /// The type asked for, as [`std::any::type_name`] writes it.
        type_name: &'static str,
        /// The name asked for, if one was.
        name: Option<String>,
    },
    /// Several services are of the type: name the one meant with `get_named`.
    Ambiguous {
        /// The type asked for.
        type_name: &'static str,
        /// The names of the services of that type, in the order added.
        names: Vec<String>,
    },
    /// The service of that name is of another type.
    WrongType {
        /// The name asked for.
        name: String,
        /// The type asked for.
        type_name: &'static str,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound {
                type_name,
                name: None,
            } => write!(f, "the supervisor has no service of type `{type_name}`"),
            LookupError::NotFound {
                name: Some(name), ..
            } => write!(f, "the supervisor has no service named `{name}`"),
            LookupError::Ambiguous { type_name, names } => write!(
                f,
                "the supervisor has {} services of type `{type_name}` ({}): name one with `get_named`",
                names.len(),
                names
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LookupError::WrongType { name, type_name } => {
                write!(f, "the service named `{name}` is not a `{type_name}`")
            }
        }
    }
}

impl std::error::Error for LookupError {}
