//! Which policy was in force at which log position.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Error, Policy, Result};

/// Every policy adopted so far, by the log position of its `PolicyAdopted` event. A policy
/// adopted at position `a` governs every event recorded after `a`; before the first adoption no
/// policy is in force and everything is denied.
#[derive(Debug, Default, Clone)]
pub struct History {
    adoptions: BTreeMap<u64, Arc<Policy>>,
}

impl History {
    /// No policy adopted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an adoption. Adoptions come in log order: a policy at or before the latest one is
    /// refused (it would rewrite history).
    pub fn adopt(&mut self, policy: Policy) -> Result<Arc<Policy>> {
        if let Some(latest) = self.latest_version()
            && policy.version() <= latest
        {
            return Err(Error::Invalid(format!(
                "policy adopted at position {} is not after the latest adoption at position {latest}",
                policy.version()
            )));
        }
        let policy = Arc::new(policy);
        self.adoptions.insert(policy.version(), policy.clone());
        Ok(policy)
    }

    /// The policy that governs an event recorded at `position`: the latest adopted before it.
    pub fn in_force_at(&self, position: u64) -> Option<&Arc<Policy>> {
        self.adoptions.range(..position).next_back().map(|(_, p)| p)
    }

    /// The policy that governs the next append: the latest adopted.
    pub fn current(&self) -> Option<&Arc<Policy>> {
        self.adoptions.values().next_back()
    }

    /// The position of the latest adoption.
    pub fn latest_version(&self) -> Option<u64> {
        self.adoptions.keys().next_back().copied()
    }

    /// How many policies have been adopted.
    pub fn len(&self) -> usize {
        self.adoptions.len()
    }

    /// Whether no policy has been adopted.
    pub fn is_empty(&self) -> bool {
        self.adoptions.is_empty()
    }
}
