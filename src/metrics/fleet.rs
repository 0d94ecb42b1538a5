//! The fleet guard's metrics: its state in the last check and the registry's counts.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Labels, labels, register};
use crate::snapshot::{FleetStatus, GuardState};

pub(super) struct Fleet {
    guard: Family<Labels, Gauge>,
    members: Gauge,
    in_rotation: Gauge,
    floor: Gauge,
}

impl Fleet {
    pub(super) fn register(r: &mut Registry) -> Fleet {
        Fleet {
            guard: register(r, "fleet_guard", GUARD, Family::default()),
            members: register(r, "fleet_members", MEMBERS, Gauge::default()),
            in_rotation: register(r, "fleet_in_rotation", IN_ROTATION, Gauge::default()),
            floor: register(r, "fleet_floor", FLOOR, Gauge::default()),
        }
    }

    pub(super) fn observe(&self, f: &FleetStatus) {
        for state in [
            GuardState::Off,
            GuardState::Idle,
            GuardState::Holding,
            GuardState::Waiting,
            GuardState::Released,
            GuardState::Unreachable,
        ] {
            self.guard
                .get_or_create(&labels(&[("state", state.as_str())]))
                .set(i64::from(state == f.guard));
        }
        let set = |g: &Gauge, v: Option<usize>| {
            if let Some(v) = v {
                g.set(v as i64);
            }
        };
        set(&self.members, f.members);
        set(&self.in_rotation, f.in_rotation);
        set(&self.floor, f.floor);
    }
}

const GUARD: &str = "1 for the fleet guard's state in the last check (holding and waiting: it keeps the node in rotation against its verdict), 0 for the others";
const MEMBERS: &str = "Nodes of the fleet recently in rotation, as the registry last showed";
const IN_ROTATION: &str = "Nodes of the fleet in rotation, as the registry last showed";
const FLOOR: &str = "The fewest nodes of the fleet the guard keeps in rotation, as last computed";
