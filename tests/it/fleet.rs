//! The Ansible example (`examples/ansible/`) run for real: `ansible-playbook` with
//! `connection: local` against the lab's router namespace (the playbook takes the namespace as
//! `portmap_netns`). The first run reports the apply task changed and the kernel forwards a real
//! connection; the second reports it ok with nothing changed; `--check` with a new configuration
//! reports the plan changed and leaves the kernel as it was. Ansible itself runs in the test's own
//! namespace, but every portmap it starts is given `--netns` of the lab: nothing touches the host.
//!
//! It needs `ansible-playbook` (Debian: `apt-get install --no-install-recommends ansible-core`,
//! which `scripts/test.sh` does) and fails loudly without it, unless `PORTMAP_TEST_ALLOW_SKIP=1`
//! is set outside CI.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portmap_testkit::{ALLOW_SKIP_ENV, CLIENT, Topology, config, require_root};

use crate::PORTMAP;

/// Longest one playbook run may take (a run takes about 7 s on an idle machine).
const PLAYBOOK_TIMEOUT: Duration = Duration::from_mins(4);

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ansible")
}

/// Whether `ansible-playbook` can run; panics (with how to install it) when it cannot, unless
/// skipping is explicitly allowed outside CI.
fn have_ansible() -> bool {
    let found = Command::new("ansible-playbook")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let allowed = std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v == "1");
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    if allowed && !in_ci {
        eprintln!("skipped: needs ansible-playbook");
        return false;
    }
    panic!(
        "ansible-playbook is not installed: the fleet example cannot be tested. Install it with \
         `apt-get install --no-install-recommends ansible-core` (scripts/test.sh does), or set \
         {ALLOW_SKIP_ENV}=1 outside CI to skip"
    );
}

/// The output of one `ansible-playbook` run.
struct Played {
    code: i32,
    output: String,
}

impl Played {
    /// The status (`ok`, `changed`, `skipping`, `failed`, `fatal`) the task named `task` reported.
    #[track_caller]
    fn task(&self, task: &str) -> &str {
        let header = format!("TASK [{task}]");
        let mut lines = self
            .output
            .lines()
            .skip_while(|l| !l.starts_with(&header))
            .skip(1);
        let status = lines
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no task {task} in:\n{}", self.output));
        status.split(':').next().unwrap_or_default()
    }

    /// `changed=N` of the play recap.
    #[track_caller]
    fn recap(&self, counter: &str) -> u32 {
        let recap = self
            .output
            .lines()
            .skip_while(|l| !l.starts_with("PLAY RECAP"))
            .nth(1)
            .unwrap_or_else(|| panic!("no recap in:\n{}", self.output));
        recap
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{counter}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {counter}= in {recap}"))
    }
}

/// Run the example playbook against the lab with the configuration `config_src`.
fn play(t: &Topology, config_src: &Path, check: bool) -> Played {
    let home = t.dir.path().join("ansible");
    let vars = serde_json::json!({
        "portmap_bin": PORTMAP.binary(),
        "portmap_netns": t.router.name(),
        "portmap_backend": t.backend(),
        "portmap_config_src": config_src,
        "portmap_config_dest": t.dir.path().join("etc/portmap.yaml"),
        "portmap_become": false,
    });
    let mut cmd = Command::new("ansible-playbook");
    cmd.current_dir(example_dir())
        .args(["-i", "inventory-local.ini", "playbook.yml", "-e"])
        .arg(vars.to_string())
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_REMOTE_TEMP", home.join("remote"))
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if check {
        cmd.arg("--check");
    }
    let mut child = cmd.spawn().expect("start ansible-playbook");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ansible-playbook") {
            break status;
        }
        if started.elapsed() > PLAYBOOK_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ansible-playbook took longer than {PLAYBOOK_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = out.join().unwrap_or_default() + &err.join().unwrap_or_default();
    Played {
        code: status.code().unwrap_or(-1),
        output,
    }
}

#[test]
fn the_ansible_playbook_applies_once_then_reports_ok_and_checks_with_plan() {
    require_root!();
    if !have_ansible() {
        return;
    }
    let t = Topology::new(PORTMAP, "fleet");
    let _web = t.tcp_server("192.168.1.66:80");
    let src = t.dir.write(
        "router.yaml",
        &config("\n  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n"),
    );

    let first = play(&t, &src, false);
    assert_eq!(first.code, 0, "{}", first.output);
    assert_eq!(first.task("Apply"), "changed", "{}", first.output);
    assert_eq!(first.recap("failed"), 0);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let applied = t.portmap(&["status", "--json"]).success().json();
    assert_eq!(applied["mappings"][0]["name"], "web", "{applied:#}");

    let second = play(&t, &src, false);
    assert_eq!(second.code, 0, "{}", second.output);
    assert_eq!(second.task("Apply"), "ok", "{}", second.output);
    assert_eq!(
        second.recap("changed"),
        0,
        "nothing changes the second time:\n{}",
        second.output
    );
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    // Check mode: nothing changes, whether or not the configuration matches.
    let check = play(&t, &src, true);
    assert_eq!(check.code, 0, "{}", check.output);
    assert_eq!(check.task("Plan (check mode)"), "ok", "{}", check.output);
    assert_eq!(check.task("Apply"), "skipping", "{}", check.output);
    let table = t.table();
    let moved = t.dir.write(
        "router.yaml",
        &config("\n  - { name: web, port: 8081, to: 192.168.1.66, to_port: 80 }\n"),
    );
    let check = play(&t, &moved, true);
    assert_eq!(check.code, 0, "{}", check.output);
    assert_eq!(check.task("Plan (check mode)"), "changed", "{}", check.output);
    assert_eq!(check.task("Apply"), "skipping", "{}", check.output);
    assert_eq!(t.table(), table, "check mode leaves the kernel alone");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let copied = std::fs::read_to_string(t.dir.path().join("etc/portmap.yaml")).expect("copied config");
    assert!(copied.contains("8080"), "check mode does not copy:\n{copied}");

    // A configuration portmap refuses fails the play before anything is copied or applied.
    let bad = t.dir.write(
        "router.yaml",
        &config("\n  - { name: web, port: 99999, to: 192.168.1.66 }\n"),
    );
    let failed = play(&t, &bad, false);
    assert_ne!(failed.code, 0, "{}", failed.output);
    assert!(failed.output.contains("mappings[0].port"), "{}", failed.output);
    assert_eq!(t.table(), table, "a refused configuration changes nothing");
}
