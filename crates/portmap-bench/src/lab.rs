//! Throwaway network namespaces for the benchmarks: an internet client, a router and a LAN host on
//! veth pairs, with documentation/private addresses inside them only. Everything is deleted on drop,
//! also when a measurement panics. Nothing here touches the host namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

/// Router WAN address.
pub const WAN: [u8; 4] = [203, 0, 113, 1];
/// LAN host address (every benchmark target lives here).
pub const LAN_HOST: [u8; 4] = [192, 168, 1, 66];

/// One namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        must(
            Command::new("ip").args(["netns", "add", &name]).output(),
            "ip netns add",
        );
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NAME <args>`, which must succeed.
    pub fn ip(&self, args: &str) {
        let mut argv = vec!["-n", self.name.as_str()];
        argv.extend(args.split_whitespace());
        must(Command::new("ip").args(&argv).output(), &format!("ip {args}"));
    }

    /// `ip netns exec NAME program args…` as a command to adjust and run.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Run `f` on a thread that has entered this namespace; sockets made there stay in it.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns(2) on a namespace fd changes only this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Client ↔ router ↔ LAN host.
#[derive(Debug)]
pub struct Lab {
    /// The internet side.
    pub client: Netns,
    /// The router portmap manages.
    pub router: Netns,
    /// The LAN host.
    pub lan: Netns,
}

impl Lab {
    /// Build the lab; names carry the process id so parallel runs never clash.
    pub fn new() -> Lab {
        let id = std::process::id();
        let client = Netns::new(format!("pmb-c-{id}"));
        let router = Netns::new(format!("pmb-r-{id}"));
        let lan = Netns::new(format!("pmb-l-{id}"));
        router.ip(&format!(
            "link add wan0 type veth peer name eth0 netns {}",
            client.name
        ));
        router.ip(&format!(
            "link add lan0 type veth peer name eth0 netns {}",
            lan.name
        ));
        router.ip("addr add 203.0.113.1/24 dev wan0");
        router.ip("addr add 192.168.1.1/24 dev lan0");
        router.ip("link set wan0 up");
        router.ip("link set lan0 up");
        client.ip("addr add 203.0.113.2/24 dev eth0");
        client.ip("link set eth0 up");
        lan.ip("addr add 192.168.1.66/24 dev eth0");
        lan.ip("link set eth0 up");
        lan.ip("route add default via 192.168.1.1");
        must(
            router
                .command("sysctl")
                .args(["-qw", "net.ipv4.ip_forward=1"])
                .output(),
            "sysctl ip_forward",
        );
        Lab { client, router, lan }
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
