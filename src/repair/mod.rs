//! Repair (opt-in): what draining cannot do.
//!
//! Draining a node does not stop its writes; making it reconnect does. The check loop calls
//! these after it has the facts of a check; the decisions in each are pure and table-tested.
//!
//! - [`kill`]: kill the node's connections on a server that is not Sentinel's verified master
//!   (`CLIENT KILL ADDR … SKIPME yes`), so a Sentinel-aware client re-resolves now. Exactly
//!   the node's connections, never rolecall's own or another client's.
//! - [`pause`]: pause writes on the verified master while a sentinel promotes its replica
//!   (`CLIENT PAUSE … WRITE`), so writes the old master would acknowledge and lose wait.
//! - [`fence`]: once Sentinel's new master is established, pause writes on the old one while it
//!   still claims master, until Sentinel demotes it (`CLIENT PAUSE <lease> WRITE`, renewed).
//! - [`command`]: run a command (e.g. restart the node) once an out-of-rotation verdict has
//!   persisted, under a fleet-wide lock on the master so no two nodes run it at once.

pub mod command;
pub mod fence;
pub mod kill;
pub mod pause;

use std::time::Duration;

pub use command::CommandRunner;
pub use kill::{Killer, note};

use crate::config::RepairConfig;
use crate::conn::{Pool, ServerAddr};
use crate::snapshot::KillReport;
use crate::verdict::RoutedConnection;

/// The repairs' state for one group, kept across checks.
#[derive(Debug, Default)]
pub struct GroupRepair {
    killer: Killer,
    pause: Option<pause::WritePause>,
    pub fence: fence::Fence,
}

impl GroupRepair {
    /// The kill repair after a check, if enabled: only against a verified master, only the
    /// node's connections elsewhere, and only once the sentinel majority names that master (not
    /// an `elected` leader's alone): a node that re-asks Sentinel before then is told the old
    /// address again. Returns what it did, for the group's status.
    pub async fn kill_stale(
        &mut self,
        cfg: &RepairConfig,
        verified_master: Option<&ServerAddr>,
        elected: bool,
        routed: &[RoutedConnection],
        pool: &Pool,
        timeout: Duration,
    ) -> Option<KillReport> {
        let master = verified_master.filter(|_| cfg.kill_stale_connections && !elected)?;
        Some(
            self.killer
                .kill_stale(cfg, master, routed, pool, timeout)
                .await,
        )
    }
}
