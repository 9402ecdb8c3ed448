//! Zero-downtime binary upgrade, the way systemd's `ExecReload` runs it: start the new binary
//! with `--upgrade` (it waits on `server.upgrade_sock` for the listening sockets), tell the old
//! process to hand them over (SIGQUIT), and wait until the new one has written its PID. Also
//! the `sd_notify` message that tells systemd which process is the service now.

use anyhow::{bail, Context};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Tells systemd (when started by it with `Type=notify`) that this process is the service's
/// main process and is ready. Does nothing outside systemd.
pub fn notify_systemd_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    // An abstract socket is written with a leading '@'.
    let p = path.to_string_lossy().to_string();
    let res = if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &p)
    };
    if let Err(e) = res {
        log::warn!("cannot notify systemd at {p}: {e}");
    }
}

fn read_pid(pid_file: &str) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Runs the upgrade with the configuration at `config`; returns the new process's PID.
pub fn upgrade(
    config: &Path,
    pid_file: &str,
    upgrade_sock: &str,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let old =
        read_pid(pid_file).with_context(|| format!("no running cong: cannot read {pid_file}"))?;
    if !alive(old) {
        bail!("the process in {pid_file} ({old}) is not running");
    }
    // File times come from a coarse clock that can lag SystemTime by a tick: allow a margin,
    // and tell a fresh socket from a stale one of an earlier upgrade by its inode too.
    let started = SystemTime::now() - Duration::from_secs(1);
    let before = std::fs::metadata(upgrade_sock)
        .ok()
        .map(|m| (m.ino(), m.modified().ok()));
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["run", "--upgrade", "-c"])
        .arg(config)
        // Not our stdout: whoever waits for this command must not wait for the new server.
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("cannot start the new process")?;
    let new = child.id() as i32;
    println!("started new process {new}; waiting for it to listen on {upgrade_sock}");
    // The new process (re)creates the upgrade socket when it is ready to receive.
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            bail!("the new process exited before taking over ({st}); the old one keeps serving");
        }
        let fresh = std::fs::metadata(upgrade_sock).is_ok_and(|m| {
            let recent = m.modified().is_ok_and(|t| t >= started);
            let replaced = match &before {
                None => true,
                Some((ino, mtime)) => *ino != m.ino() || mtime.is_none_or(|t| t < started),
            };
            recent && replaced
        });
        if fresh {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the new process did not open {upgrade_sock} in time; the old one keeps serving");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("handing the listening sockets over from {old} to {new}");
    // SAFETY: plain kill(2) to the process named by our own PID file.
    unsafe {
        libc::kill(old, libc::SIGQUIT);
    }
    loop {
        if read_pid(pid_file) == Some(new) {
            println!("upgrade done: process {new} serves; {old} finishes its requests and exits");
            return Ok(new);
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("the new process exited during the hand-over ({st})");
        }
        if Instant::now() > deadline {
            bail!("the new process did not confirm the hand-over in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
