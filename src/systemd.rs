//! systemd notifications (`Type=notify`): `READY=1` once the listeners are bound, `WATCHDOG=1`
//! after every complete check (so a wedged check loop stops feeding the watchdog), `STATUS=`
//! with the verdict for `systemctl status`, `STOPPING=1` on shutdown. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use sd_notify::NotifyState;

use crate::snapshot::Snapshot;

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "systemd notification failed");
    }
}

pub fn ready() {
    send(&[
        NotifyState::Ready,
        NotifyState::Status("listening; first check running"),
    ]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub fn status(s: &Snapshot) {
    let line = format!(
        "{} ({}): {}",
        s.verdict,
        if s.in_rotation {
            "in rotation"
        } else {
            "out of rotation"
        },
        s.reason
    );
    send(&[NotifyState::Status(&line)]);
}
