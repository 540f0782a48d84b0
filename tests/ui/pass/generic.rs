// Generic services: bounds on the struct, on the impl, in where clauses, or none at all
// (the impls then apply to the instantiations that are `Send + Sync + 'static`).
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;

use service_runtime::{HealthStatus, Managed, Service, lifecycle};

#[derive(Service)]
struct Cache<K: Send + Sync + 'static> {
    entries: HashMap<K, String>,
}

#[lifecycle]
impl<K: Eq + Hash + Send + Sync + 'static> Cache<K> {
    #[init]
    async fn warm(&mut self) -> Result<(), std::io::Error> {
        self.entries.clear();
        Ok(())
    }

    #[health]
    async fn size(&self) -> HealthStatus {
        if self.entries.len() < 1_000 {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        }
    }
}

#[derive(Service)]
struct Wrapper<T, const N: usize>
where
    T: Clone,
{
    items: [T; N],
}

#[lifecycle]
impl<T, const N: usize> Wrapper<T, N>
where
    T: Clone,
{
    #[cleanup]
    async fn drain(&mut self) -> Result<(), std::io::Error> {
        let _copy = self.items.clone();
        Ok(())
    }
}

#[derive(Service)]
struct Tagged<'a, T> {
    tag: PhantomData<&'a T>,
}

#[lifecycle]
impl<T> Tagged<'_, T> {}

fn main() {
    assert_eq!(<Cache<u32> as Service>::config().name, "cache");
    let _ = Managed::new(Cache::<u32> {
        entries: HashMap::new(),
    });
    let _ = Managed::new(Wrapper { items: [1u8; 4] });
    let _ = Managed::new(Tagged::<'static, String> { tag: PhantomData });
}
