//! Child processes killed on drop, binary lookup, free ports and log tails.

use std::io::{Read, Seek};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process that is SIGKILLed and reaped when dropped.
pub(crate) struct Proc {
    child: Child,
    what: String,
    status: Option<ExitStatus>,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, what: impl Into<String>) -> Proc {
        let what = what.into();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Proc {
            child,
            what,
            status: None,
        }
    }

    /// The child's stdout pipe (spawned with `Stdio::piped()`), for a reader thread.
    pub(crate) fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{}: stdout is not piped or already taken", self.what))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.what));
        }
        self.status
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `signal` unless the process has already been reaped (so its pid cannot have been
    /// reused by another process).
    pub(crate) fn signal(&mut self, signal: libc::c_int) {
        if !self.is_running() {
            return;
        }
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the child is
        // not reaped yet, so the pid is still ours.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}) for {}: {}",
            self.what,
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (which also ends a SIGSTOPped process) and reap.
    pub(crate) fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The binary named by `env_var`, else `name` on `PATH` (or in the usual system directories).
/// Panics with `install_hint` when it is missing: a missing server fails the test, never skips it.
pub(crate) fn find_binary(env_var: &str, name: &str, install_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} does not exist: install {name} with `{install_hint}` or fix {env_var}",
            path.display()
        );
        return path;
    }
    on_path(name).unwrap_or_else(|| panic!("{name} not found: install it with `{install_hint}`"))
}

/// `name` on `PATH` or in the usual system directories, if it is there.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A loopback port that was free a moment ago (bind to port 0, read it, close). Another
/// process may take it before the caller binds it; callers that can tell (a server that exits
/// with "Address already in use") retry with another port.
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// [`free_port`] for another local address (a pod's `127.x.y.z`, say): a port another socket
/// may hold on 127.0.0.1 can still be free there, and the other way round.
pub fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"))
        .port()
}

/// Runs `cmd` to completion with stdin closed and stdout and stderr collected (through temp
/// files, so a chatty child never blocks on a pipe), killing it after `timeout` (then `None`).
pub(crate) fn run_bounded(mut cmd: Command, what: &str, timeout: Duration) -> Option<Output> {
    let out = tempfile::tempfile().expect("create a temp file");
    let err = tempfile::tempfile().expect("create a temp file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup a temp file"))
        .stderr(err.try_clone().expect("dup a temp file"));
    let mut proc = Proc::spawn(cmd, what);
    let status = proc.wait_exit(timeout)?;
    let read = |mut f: std::fs::File| {
        let mut bytes = Vec::new();
        let _ = f.rewind().and_then(|()| f.read_to_end(&mut bytes));
        bytes
    };
    Some(Output {
        status,
        stdout: read(out),
        stderr: read(err),
    })
}

/// The last `lines` lines of a text file, or a note that it cannot be read.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
