//! Timing whole processes (wall time and peak RSS from `wait4`), commands that must succeed, medians,
//! and the dataplane probe: new TCP connections per second from the client namespace through the
//! router to the LAN host, for a bounded time.

use std::io::Read;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portmap_testkit::{LAN_HOSTS, Topology, WAN};

/// One finished process.
#[derive(Debug)]
pub struct Run {
    /// Wall time.
    pub wall: Duration,
    /// Peak resident set size in bytes.
    pub max_rss: u64,
    /// Standard output.
    pub stdout: String,
}

/// Run `cmd` to completion, measuring wall time and peak RSS; panics when it fails.
#[allow(clippy::zombie_processes)] // reaped with wait4, which std does not offer
pub fn run(mut cmd: Command, what: &str) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    // Reaped by wait4 below (std's wait would not report the child's peak RSS).
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writing.
    let rc = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall = start.elapsed();
    assert!(rc == pid, "{what}: wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what} failed ({status}):\n{stdout}\n{stderr}"
    );
    Run {
        wall,
        max_rss: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        stdout,
    }
}

/// The output of a command that must have succeeded.
pub fn must(out: std::io::Result<Output>, what: &str) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Median of durations (they are sorted in place).
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// How long [`connection_rate`] waits before it measures.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// How many times the dataplane is measured at 1 mapping and at N, alternating.
pub const DATAPLANE_ROUNDS: usize = 3;

/// The median of connection rates.
pub fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// New TCP connections per second from the client to WAN:`port` (DNAT-ed to the LAN host's port 80),
/// counted for `duration`. Each connection is opened and reset at once, so neither side keeps it.
pub fn connection_rate(lab: &Topology, port: u16, duration: Duration) -> f64 {
    // Let the kernel finish freeing what the last change released first: the rules of a destroyed
    // 10,000-mapping table are freed by RCU callbacks and workers on the same two cores, and a
    // sample taken meanwhile (as the one at 1 mapping right after the N-mapping table went) came
    // out at a quarter of the rate.
    std::thread::sleep(SETTLE);
    let listener = lab
        .lan
        .enter(|| TcpListener::bind(SocketAddrV4::new(LAN_HOSTS[0], 80)))
        .expect("bind server");
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = Arc::clone(&stop);
    listener.set_nonblocking(true).expect("nonblocking");
    let server = std::thread::spawn(move || {
        while !server_stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    });
    let target = SocketAddrV4::new(WAN, port);
    let (count, elapsed) = lab.client.enter(move || {
        // Warm up once, so a failing forward is reported instead of measured as zero.
        let first = TcpStream::connect_timeout(&target.into(), Duration::from_secs(2));
        assert!(
            first.is_ok(),
            "no connection through the forward to {target}: {first:?}"
        );
        let start = Instant::now();
        let mut count = 0u64;
        while start.elapsed() < duration {
            if let Ok(s) = TcpStream::connect_timeout(&target.into(), Duration::from_secs(1)) {
                reset_on_close(&s);
                count += 1;
            }
        }
        (count, start.elapsed())
    });
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    #[allow(clippy::cast_precision_loss)]
    let rate = count as f64 / elapsed.as_secs_f64();
    rate
}

/// `SO_LINGER` 0: closing sends a reset, so no `TIME_WAIT` piles up on the client.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized `linger` value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(8),
        );
    }
}

/// Forget every tracked connection in the router, so one measurement's entries do not weigh on the
/// next.
pub fn flush_conntrack(lab: &Topology) {
    let netns = portmap_netlink::Netns::Named(lab.router.name().to_owned());
    if let Ok(mut ct) = portmap_netlink::Conntrack::open(&netns) {
        let _ = ct.delete_where(None, |_| true);
    }
}
