//! The plan of a run, checked and computed before anything starts: every name unique,
//! every dependency known and none cyclic; the start levels (each level's services start
//! in parallel, the levels one after another); and the group a restart takes along.

use std::collections::{HashMap, VecDeque};

use super::Supervisor;
use super::report::SupervisorError;

impl Supervisor {
    /// Checks names and dependencies and computes the start levels.
    pub(super) fn plan(&self) -> Result<Plan, Vec<SupervisorError>> {
        let mut errors: Vec<SupervisorError> = self
            .config_errors
            .iter()
            .cloned()
            .map(SupervisorError::Config)
            .collect();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.entries.len());
        let mut start = 0;
        for (i, &end) in self.name_ends.iter().enumerate() {
            let name = &self.names[start..end];
            start = end;
            if index.insert(name, i).is_some() {
                errors.push(SupervisorError::Config(format!(
                    "two services are named `{name}`; give one another name with `ServiceConfig::name`"
                )));
            }
        }
        // Only made when some service depends on another: nothing is owed otherwise.
        let mut deps = Vec::new();
        if self
            .entries
            .iter()
            .any(|entry| !entry.depends_on.is_empty())
        {
            deps = vec![Vec::new(); self.entries.len()];
        }
        for (i, entry) in self.entries.iter().enumerate() {
            for name in &entry.depends_on {
                match index.get(name.as_str()) {
                    Some(&j) if j == i => errors.push(SupervisorError::Config(format!(
                        "service `{name}` depends on itself"
                    ))),
                    Some(&j) => {
                        if !deps[i].contains(&j) {
                            deps[i].push(j);
                        }
                    }
                    None => errors.push(SupervisorError::Config(format!(
                        "service `{}` depends on `{name}`, which was not added to the supervisor",
                        entry.service.0.name()
                    ))),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let sequential = deps.iter().all(Vec::is_empty);
        let (order, level_ends) = if sequential {
            (
                (0..self.entries.len()).collect(),
                (1..=self.entries.len()).collect(),
            )
        } else {
            match levels(&deps) {
                Ok(levels) => {
                    let mut order = Vec::with_capacity(self.entries.len());
                    let mut ends = Vec::with_capacity(levels.len());
                    for level in levels {
                        order.extend(level);
                        ends.push(order.len());
                    }
                    (order, ends)
                }
                Err(cycle) => {
                    let names: Vec<_> = cycle
                        .iter()
                        .map(|&i| format!("`{}`", self.entries[i].service.0.name()))
                        .collect();
                    return Err(vec![SupervisorError::Config(format!(
                        "dependency cycle: {}",
                        names.join(" -> ")
                    ))]);
                }
            }
        };
        let mut dependents = Vec::new();
        if !deps.is_empty() {
            dependents = vec![Vec::new(); self.entries.len()];
        }
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        Ok(Plan {
            deps,
            dependents,
            order,
            level_ends,
        })
    }
}

/// Groups services into start levels: level 0 depends on nothing, level n on lower
/// levels only. Returns a cycle's members when there is one.
fn levels(deps: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let n = deps.len();
    let mut level = vec![None::<usize>; n];
    let mut remaining: Vec<usize> = (0..n).collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|&i| {
            let mut max = 0;
            for &d in &deps[i] {
                match level[d] {
                    Some(l) => max = max.max(l + 1),
                    None => return true,
                }
            }
            level[i] = Some(max);
            false
        });
        if remaining.len() == before {
            return Err(find_cycle(deps, &remaining));
        }
    }
    let depth = level.iter().flatten().max().map_or(0, |l| l + 1);
    let mut out = vec![Vec::new(); depth];
    for (i, l) in level.into_iter().enumerate() {
        out[l.expect("every service got a level")].push(i);
    }
    Ok(out)
}

/// A cycle among `stuck` (services whose dependencies never resolved), in dependency order.
fn find_cycle(deps: &[Vec<usize>], stuck: &[usize]) -> Vec<usize> {
    let mut path = vec![stuck[0]];
    loop {
        let last = *path.last().expect("path is never empty");
        let next = deps[last]
            .iter()
            .copied()
            .find(|d| stuck.contains(d))
            .expect("a stuck service has a stuck dependency");
        if let Some(start) = path.iter().position(|&p| p == next) {
            let mut cycle = path[start..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

pub(super) struct Plan {
    /// What each service depends on; empty when no service depends on another.
    deps: Vec<Vec<usize>>,
    /// What depends on each service; empty when no service depends on another.
    dependents: Vec<Vec<usize>>,
    /// Every service in start order: the levels one after another.
    pub(super) order: Vec<usize>,
    /// Where each level ends in `order` (one level per service when nothing depends).
    pub(super) level_ends: Vec<usize>,
}

impl Plan {
    /// The start levels, in start order: each level's services start in parallel.
    pub(super) fn levels(&self) -> impl DoubleEndedIterator<Item = &[usize]> + '_ {
        self.level_ends.iter().enumerate().map(|(k, &end)| {
            let start = k.checked_sub(1).map_or(0, |before| self.level_ends[before]);
            &self.order[start..end]
        })
    }

    /// `root` and everything that depends on it, transitively, in start order.
    pub(super) fn rest_for_one(&self, root: usize) -> Vec<usize> {
        if self.dependents.is_empty() {
            return vec![root];
        }
        let mut member = vec![false; self.dependents.len()];
        member[root] = true;
        let mut queue = VecDeque::from([root]);
        while let Some(i) = queue.pop_front() {
            for &d in &self.dependents[i] {
                if !member[d] {
                    member[d] = true;
                    queue.push_back(d);
                }
            }
        }
        self.order.iter().copied().filter(|&i| member[i]).collect()
    }

    /// Adds a service that depends on `on` (services of the plan) and that nothing
    /// depends on yet, as the next index; returns it. It joins the level after the
    /// highest of its dependencies (the first level if it has none), so it starts after
    /// them and stops before them, in parallel with that level's other services.
    pub(super) fn add(&mut self, on: &[usize]) -> usize {
        let index = self.order.len();
        if on.is_empty() && self.deps.is_empty() {
            // Nothing depends on anything: one level per service, in the order added.
            self.order.push(index);
            self.level_ends.push(index + 1);
            return index;
        }
        if self.deps.is_empty() {
            self.deps = vec![Vec::new(); index];
            self.dependents = vec![Vec::new(); index];
        }
        for &d in on {
            self.dependents[d].push(index);
        }
        self.deps.push(on.to_vec());
        self.dependents.push(Vec::new());
        let level_of = |i: usize| {
            let at = self
                .order
                .iter()
                .position(|&o| o == i)
                .expect("a planned service");
            self.level_ends.partition_point(|&end| end <= at)
        };
        let level = on.iter().map(|&d| level_of(d) + 1).max().unwrap_or(0);
        if level == self.level_ends.len() {
            self.order.push(index);
            self.level_ends.push(self.order.len());
        } else {
            self.order.insert(self.level_ends[level], index);
            for end in &mut self.level_ends[level..] {
                *end += 1;
            }
        }
        index
    }

    pub(super) fn depends_transitively(&self, i: usize, on: usize) -> bool {
        let Some(deps) = self.deps.get(i) else {
            return false;
        };
        let mut stack = deps.clone();
        let mut seen = vec![false; self.deps.len()];
        while let Some(d) = stack.pop() {
            if d == on {
                return true;
            }
            if !std::mem::replace(&mut seen[d], true) {
                stack.extend(&self.deps[d]);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;

    fn levels(plan: &Plan) -> Vec<Vec<usize>> {
        plan.levels().map(<[usize]>::to_vec).collect()
    }

    #[test]
    fn an_added_service_joins_the_level_after_its_dependencies() {
        // Nothing depends on anything: one level per service.
        let mut plan = Plan {
            deps: Vec::new(),
            dependents: Vec::new(),
            order: vec![0, 1],
            level_ends: vec![1, 2],
        };
        assert_eq!(plan.add(&[]), 2);
        assert_eq!(levels(&plan), [vec![0], vec![1], vec![2]]);
        assert_eq!(plan.add(&[0]), 3);
        assert_eq!(levels(&plan), [vec![0], vec![1, 3], vec![2]]);
        assert_eq!(plan.rest_for_one(0), [0, 3]);
        assert!(plan.depends_transitively(3, 0));
        // After its deepest dependency, in a level of its own when that is the last.
        assert_eq!(plan.add(&[3, 2]), 4);
        assert_eq!(levels(&plan), [vec![0], vec![1, 3], vec![2], vec![4]]);
        assert_eq!(plan.rest_for_one(0), [0, 3, 4]);
        assert!(plan.depends_transitively(4, 0));
        // With dependencies about, one without joins the first level.
        assert_eq!(plan.add(&[]), 5);
        assert_eq!(levels(&plan), [vec![0, 5], vec![1, 3], vec![2], vec![4]]);
        assert_eq!(plan.rest_for_one(5), [5]);
    }
}
