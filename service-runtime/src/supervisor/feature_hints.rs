//! The builder and handle methods of a feature that is off, kept so that calling one says
//! which feature to enable: each is bounded by a trait no type implements, whose
//! `on_unimplemented` message names the feature (a builder method's argument is generic
//! over it; a handle method without one bounds `&Self`, for every lifetime, which the
//! compiler checks at the call rather than at the definition). Hidden from the docs,
//! which show the real methods (docs.rs builds with every feature).

/// Implemented by no type: a bound on it makes a call say the `http` feature is off.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this method needs the `http` feature of `service-runtime`",
    label = "available with the `http` feature",
    note = "enable it in Cargo.toml: `service-runtime = {{ version = \"0.1\", features = [\"http\"] }}`"
)]
pub trait NeedsHttp {}

/// Implemented by no type: a bound on it makes a call say the `axum` feature is off.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this method needs the `axum` feature of `service-runtime`",
    label = "available with the `axum` feature",
    note = "enable it in Cargo.toml: `service-runtime = {{ version = \"0.1\", features = [\"axum\"] }}`"
)]
pub trait NeedsAxum {}

/// Implemented by no type: a bound on it makes a call say the `metrics` feature is off.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this method needs the `metrics` feature of `service-runtime`",
    label = "available with the `metrics` feature",
    note = "enable it in Cargo.toml: `service-runtime = {{ version = \"0.1\", features = [\"metrics\"] }}`"
)]
pub trait NeedsMetrics {}

/// Implemented by no type: a bound on it makes a call say the `systemd` feature is off.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this method needs the `systemd` feature of `service-runtime`",
    label = "available with the `systemd` feature",
    note = "enable it in Cargo.toml: `service-runtime = {{ version = \"0.1\", features = [\"systemd\"] }}`"
)]
pub trait NeedsSystemd {}

#[cfg(not(feature = "http"))]
impl crate::Supervisor {
    /// Needs feature `http`.
    #[doc(hidden)]
    #[must_use]
    pub fn serve_health<A: NeedsHttp>(self, _address: A) -> Self {
        unreachable!("no type implements `NeedsHttp`")
    }

    /// Needs feature `http`.
    #[doc(hidden)]
    #[must_use]
    pub fn health_cache_ttl<T: NeedsHttp>(self, _ttl: T) -> Self {
        unreachable!("no type implements `NeedsHttp`")
    }

    /// Needs feature `http`.
    #[doc(hidden)]
    #[must_use]
    pub fn probe_limits<L: NeedsHttp>(self, _limits: L) -> Self {
        unreachable!("no type implements `NeedsHttp`")
    }

    /// Needs feature `http`.
    #[doc(hidden)]
    #[must_use]
    pub fn show_details<D: NeedsHttp>(self, _level: D) -> Self {
        unreachable!("no type implements `NeedsHttp`")
    }
}

#[cfg(not(feature = "http"))]
impl crate::SupervisorHandle {
    /// Needs feature `http`.
    #[doc(hidden)]
    pub fn probe_address(&self) -> Option<std::net::SocketAddr>
    where
        for<'a> &'a Self: NeedsHttp,
    {
        unreachable!("no type implements `NeedsHttp`")
    }

    /// Needs feature `http`.
    #[doc(hidden)]
    pub fn probe_service(&self) -> std::convert::Infallible
    where
        for<'a> &'a Self: NeedsHttp,
    {
        unreachable!("no type implements `NeedsHttp`")
    }
}

#[cfg(not(feature = "axum"))]
impl crate::SupervisorHandle {
    /// Needs feature `axum`.
    #[doc(hidden)]
    pub fn probe_router(&self) -> std::convert::Infallible
    where
        for<'a> &'a Self: NeedsAxum,
    {
        unreachable!("no type implements `NeedsAxum`")
    }
}

#[cfg(not(feature = "metrics"))]
impl crate::Supervisor {
    /// Needs feature `metrics`.
    #[doc(hidden)]
    #[must_use]
    pub fn metrics_registry<R: NeedsMetrics>(self, _registry: R) -> Self {
        unreachable!("no type implements `NeedsMetrics`")
    }
}

#[cfg(not(feature = "systemd"))]
impl crate::Supervisor {
    /// Needs feature `systemd`.
    #[doc(hidden)]
    #[must_use]
    pub fn systemd<N: NeedsSystemd>(self, _notifier: N) -> Self {
        unreachable!("no type implements `NeedsSystemd`")
    }
}
