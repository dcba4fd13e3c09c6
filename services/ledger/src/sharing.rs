//! The sharing policy as the log records it: every `PolicyAdopted` event, compiled, by position.
//! The Ledger checks appends against the latest; the read models will ask [`Sharing::in_force_at`]
//! for `receive` and `view` decisions as of any position (it reads the log again whenever the
//! position is beyond what it has read, so it never answers with a replaced policy).

use std::sync::{Arc, RwLock};

use accord_domain::payload::{Payload, PolicyAdopted};
use accord_policy::{History, Policy};
use accord_store::{RecordedEvent, Store};

use crate::{Error, Result, convert};

/// The store and the policy history read from it. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Sharing {
    store: Store,
    history: RwLock<Known>,
}

/// The adoptions read so far, complete for every position below `log_size`.
#[derive(Debug, Default)]
struct Known {
    history: History,
    log_size: u64,
}

/// Compiles a `PolicyAdopted` payload as the policy in force after `position`. `field` prefixes
/// error messages.
pub fn compile(field: &str, position: u64, p: &PolicyAdopted) -> Result<Policy> {
    let views = p
        .views
        .iter()
        .map(|v| accord_policy::ViewDef {
            id: v.id.clone(),
            record_kind: v.record_kind.clone(),
            field_groups: v.field_groups.iter().cloned().collect(),
        })
        .collect();
    Policy::compile(position, p.schema_version, &p.policies, views)
        .map_err(|e| Error::Invalid(format!("{field}.payload.{e}")))
}

fn compile_recorded(e: &RecordedEvent) -> Result<Policy> {
    let at = format!("policy at position {}", e.position);
    let body = convert::event_body(&at, &e.body)?;
    match convert::payload(&at, &body)? {
        Payload::PolicyAdopted(p) => compile(&at, e.position, &p),
        _ => Err(Error::Store(accord_store::Error::Corrupt(format!(
            "position {} is listed as a policy adoption but holds {}",
            e.position, e.event_type
        )))),
    }
}

impl Sharing {
    /// Loads every adopted policy from `store`.
    pub async fn load(store: Store) -> Result<Arc<Sharing>> {
        let s = Sharing { store, history: RwLock::new(Known::default()) };
        s.refresh().await?;
        Ok(Arc::new(s))
    }

    /// The store behind it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads adoptions recorded since the last refresh (by this or another server process).
    /// Returns whether a new policy was found.
    pub async fn refresh(&self) -> Result<bool> {
        // The log size first: every adoption below it is then in what is read next.
        let log_size = self.store.log_size().await?;
        let after = self.history.read().expect("policy history").history.latest_version();
        let new = self.store.policy_adoptions(after).await?;
        let compiled = new.iter().map(compile_recorded).collect::<Result<Vec<_>>>()?;
        let mut k = self.history.write().expect("policy history");
        let mut found = false;
        for p in compiled {
            // Another task may have refreshed meanwhile: skip what is already known.
            if k.history.latest_version().is_none_or(|v| p.version() > v) {
                let version = p.version();
                k.history.adopt(p).map_err(|e| Error::Store(accord_store::Error::Corrupt(e.to_string())))?;
                tracing::info!(version, "sharing policy loaded");
                found = true;
            }
        }
        k.log_size = k.log_size.max(log_size);
        Ok(found)
    }

    /// The policy that governs the next append, if any was adopted, as far as this process has
    /// read the log. The sequencer refuses an append checked under a policy that is no longer the
    /// latest, so a stale answer here cannot record anything.
    pub fn current(&self) -> Option<Arc<Policy>> {
        self.history.read().expect("policy history").history.current().cloned()
    }

    /// The policy in force at `position` as far as this process has read the log, without reading
    /// it again: for positions at or below one [`Sharing::in_force_at`] has answered for.
    pub fn known_at(&self, position: u64) -> Option<Arc<Policy>> {
        self.history.read().expect("policy history").history.in_force_at(position).cloned()
    }

    /// The policy that governed (or governs) an event at `position`. Reads the log first when
    /// this process has not yet seen every adoption below `position`, so a read model never
    /// applies a policy that had already been replaced.
    pub async fn in_force_at(&self, position: u64) -> Result<Option<Arc<Policy>>> {
        if position > self.history.read().expect("policy history").log_size {
            self.refresh().await?;
        }
        Ok(self.history.read().expect("policy history").history.in_force_at(position).cloned())
    }
}
