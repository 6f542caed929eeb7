//! Child processes of the load generator: the node processes of
//! `run --processes` (`barge-loadgen node`) and of `chaos`
//! (`barge-loadgen kv`), managed one way.
//!
//! - A [`ChildProcess`] is SIGKILLed and reaped when dropped, so every exit
//!   path of the parent (an error, a panic unwinding) takes the child along.
//! - A parent that dies without unwinding (SIGKILL, a test harness's
//!   timeout) cannot kill anything, so the child watches for it: it is
//!   started with [`PARENT_STDIN_FLAG`] and a piped stdin that only the
//!   parent holds, and [`watch_stdin_closed`] in the child sees the pipe
//!   close when the parent is gone, whatever way it went.
//! - Every wait is bounded: [`ChildProcess::wait_ready`] and
//!   [`ChildProcess::wait_exit`] take a timeout or deadline.
//!
//! ```no_run
//! use std::process::{Command, Stdio};
//! use std::time::{Duration, Instant};
//! use barge_loadgen::children::ChildProcess;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let mut command = Command::new("barge-loadgen");
//! command.args(["node", "--id", "1" /* , ... */]);
//! command.stdout(Stdio::piped());
//! let mut node = ChildProcess::spawn(&mut command)?;
//! node.wait_ready(Duration::from_secs(30)).await?;
//! node.close_stdin(); // asks it to stop cleanly
//! let status = node.wait_exit(Instant::now() + Duration::from_secs(15)).await?;
//! assert!(status.is_some_and(|status| status.success()));
//! # Ok(())
//! # }
//! ```

use std::io::BufRead;
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The flag a child process is started with: it stops when its stdin
/// closes (see [`watch_stdin_closed`]).
pub const PARENT_STDIN_FLAG: &str = "--parent-stdin";

/// How often a bounded wait for an exit looks again.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A child process, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    /// Its stdout once [`ChildProcess::wait_ready`] has read the first line,
    /// kept open so that a late write by the child cannot fail on a closed
    /// pipe.
    stdout: Option<ChildStdout>,
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped (SIGSTOP) process. `kill` fails only
        // if it already exited; then `wait` reaps it (or returns the status
        // already collected).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildProcess {
    /// Starts `command` with [`PARENT_STDIN_FLAG`] appended and its stdin a
    /// pipe held by this process, so the child stops when this process is
    /// gone. Set stdout and stderr on `command` before.
    ///
    /// # Errors
    /// The process could not be started.
    pub fn spawn(command: &mut Command) -> std::io::Result<ChildProcess> {
        let child = command
            .arg(PARENT_STDIN_FLAG)
            .stdin(Stdio::piped())
            .spawn()?;
        Ok(ChildProcess {
            child,
            stdout: None,
        })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs it and reaps it; its exit status, if it could be collected.
    pub fn kill(mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
        // Drop kills (a no-op now) and reaps (returns the cached status).
    }

    /// Its exit status if it has exited (it is then reaped), without
    /// waiting.
    ///
    /// # Errors
    /// The status could not be asked for.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Closes its stdin: a child started by [`ChildProcess::spawn`] stops
    /// (cleanly, if it is a `node`).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Waits until `deadline` for it to exit by itself; `None` if it still
    /// runs then (it is left running).
    ///
    /// # Errors
    /// Its status could not be asked for.
    ///
    /// # Cancel safety
    /// Cancel-safe: the child is untouched until it exits.
    pub async fn wait_exit(&mut self, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Waits (at most `timeout`) for its first stdout line and checks that
    /// it says `ready`. Its stdout must have been piped.
    ///
    /// # Errors
    /// No stdout, no line within `timeout`, or another line (the child
    /// failed to start; its own error is on its stderr).
    ///
    /// # Cancel safety
    /// Not cancel-safe: the stdout is gone while the read is pending.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let stdout = self.child.stdout.take().context("the child's stdout")?;
        let reading = tokio::task::spawn_blocking(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            (read.map(|_| line), reader.into_inner())
        });
        // On a timeout the reading thread stays blocked until the child is
        // killed (the caller's error path drops it), then sees EOF.
        let Ok(joined) = tokio::time::timeout(timeout, reading).await else {
            bail!("did not start within {timeout:?}");
        };
        let (line, stdout) = joined.context("reading a child's first line")?;
        self.stdout = Some(stdout);
        let line = line.context("reading its stdout")?;
        if line.trim() == "ready" {
            return Ok(());
        }
        let status = self
            .child
            .wait()
            .map(|status| status.to_string())
            .unwrap_or_else(|error| error.to_string());
        bail!("failed to start ({status}); its error is above")
    }
}

/// `count` pairs of a loopback UDP socket and a loopback TCP listener, each
/// pair on one free port, all distinct. They stay bound while held, so
/// nothing else (a proxy starting meanwhile, say) takes one; the caller
/// drops them right before the children bind the same ports. The ports lie
/// outside the kernel's ephemeral range ([`barge_net::ports`]), so no
/// socket binding port 0 or connecting out takes one while a child is down
/// between a kill and its restart.
///
/// # Errors
/// A port could not be bound.
pub fn loopback_ports(count: u64) -> Result<Vec<(UdpSocket, TcpListener)>> {
    (0..count)
        .map(|_| {
            let address =
                barge_net::ports::loopback_address().context("finding a loopback port")?;
            let udp = UdpSocket::bind(address).context("binding a loopback UDP port")?;
            let tcp = TcpListener::bind(address).context("binding a loopback TCP port")?;
            Ok((udp, tcp))
        })
        .collect()
}

/// In a child started by [`ChildProcess::spawn`]: runs `on_closed` on a
/// thread of its own once stdin reaches its end or fails, that is when the
/// parent closed it or is gone.
///
/// # Errors
/// The watching thread could not be started.
pub fn watch_stdin_closed(on_closed: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    // A plain thread: tokio's stdin is a feature the workspace leaves off,
    // and the read blocks for the whole run anyway.
    std::thread::Builder::new()
        .name("parent-stdin".to_owned())
        .spawn(move || {
            let mut scratch = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            while let Ok(read) = std::io::Read::read(&mut stdin, &mut scratch) {
                if read == 0 {
                    break;
                }
            }
            on_closed();
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn loopback_ports_are_distinct() {
        let ports = loopback_ports(3).expect("ports");
        let udp: Vec<SocketAddr> = ports.iter().map(|(u, _)| u.local_addr().unwrap()).collect();
        let tcp: Vec<SocketAddr> = ports.iter().map(|(_, t)| t.local_addr().unwrap()).collect();
        for set in [&udp, &tcp] {
            let mut numbers: Vec<u16> = set.iter().map(SocketAddr::port).collect();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers.len(), 3, "ports repeat within a set: {set:?}");
            assert!(set.iter().all(|address| address.ip().is_loopback()));
        }
    }

    /// The parent of process `pid` per /proc, if the process exists.
    fn parent_of(pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (in parentheses) may hold spaces; fields after
        // it are: state, parent pid, ...
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse().ok()
    }

    #[tokio::test]
    async fn closing_stdin_ends_the_child_and_dropping_kills_and_reaps_it() {
        // `sh -c SCRIPT NAME --parent-stdin`: the flag is an unused `$1`;
        // `cat` reads the piped stdin until the parent closes it.
        let mut command = Command::new("sh");
        command.args(["-c", "cat >/dev/null; exit 7", "sh"]);
        let mut child = ChildProcess::spawn(&mut command).expect("sh");
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(child.wait_exit(soon).await.expect("status"), None);
        child.close_stdin();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = child.wait_exit(deadline).await.expect("status");
        assert_eq!(status.and_then(|status| status.code()), Some(7));

        let mut command = Command::new("sh");
        command.args(["-c", "sleep 600", "sh"]);
        let child = ChildProcess::spawn(&mut command).expect("sh");
        let pid = child.id();
        assert_eq!(parent_of(pid), Some(std::process::id()));
        drop(child);
        // Killed and reaped: no process (not even a zombie) of ours under
        // that pid. A new unrelated process may reuse it, but not as our
        // child.
        assert_ne!(parent_of(pid), Some(std::process::id()));
    }
}
