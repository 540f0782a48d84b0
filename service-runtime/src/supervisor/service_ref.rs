//! [`ServiceRef`]: what names a service in [`Supervisor::depends_on`](super::Supervisor::depends_on).

/// Something that names a service in [`Supervisor::depends_on`](super::Supervisor::depends_on): its name, or its handle.
pub trait ServiceRef {
    /// The name of the service referred to.
    fn service_name(&self) -> String;
}

impl ServiceRef for &str {
    fn service_name(&self) -> String {
        (*self).to_owned()
    }
}

impl ServiceRef for String {
    fn service_name(&self) -> String {
        self.clone()
    }
}

impl<S: crate::Service> ServiceRef for &crate::Managed<S> {
    fn service_name(&self) -> String {
        self.name().to_owned()
    }
}
