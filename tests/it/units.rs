//! The systemd units in dist/systemd and the install script: `scripts/install.sh` stages them (with
//! the binary, the docs and an example configuration that never replaces an existing one), and
//! `systemd-analyze verify` accepts what it installed — offline, with `--root` at the staging
//! directory, since no systemd runs here; a broken copy is refused, so the check can fail. The
//! units' capability bounding set is enough for what portmap does: apply, plan, status, destroy
//! and watch run under `setpriv` with exactly those capabilities, inside the test's namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portmap_testkit::topology::path_str;
use portmap_testkit::{CLIENT, Daemon, Run, TempDir, Topology, config, require_root, run};

use crate::PORTMAP;

const UNITS: [&str; 2] = ["portmap.service", "portmap-watch.service"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/install.sh --destdir DIR --binary <the binary under test>`.
#[track_caller]
fn install(destdir: &Path) -> Run {
    let script = repo().join("scripts/install.sh");
    let out = run(
        "bash",
        &[
            path_str(&script),
            "--destdir",
            path_str(destdir),
            "--binary",
            PORTMAP.binary(),
        ],
        None,
        None,
    );
    assert!(out.ok(), "{out}");
    out
}

/// `systemd-analyze verify` of `units` with `root` as the file system: exit 0 and not a word of
/// complaint (it reports unknown keys and bad values on standard error, exiting 0).
fn verify(root: &Path, units: &[PathBuf]) -> Run {
    let root_arg = format!("--root={}", root.display());
    let mut args = vec!["verify", "--man=no", root_arg.as_str()];
    args.extend(units.iter().map(|u| path_str(u)));
    run("systemd-analyze", &args, None, None)
}

#[test]
fn the_installed_units_pass_systemd_analyze_verify() {
    let stage = TempDir::new("units");
    let out = install(stage.path());
    assert!(out.stdout.contains("installed an example configuration"), "{out}");
    let unitdir = stage.path().join("usr/local/lib/systemd/system");
    for file in [
        "usr/local/sbin/portmap",
        "usr/local/share/doc/portmap/operations.md",
        "etc/portmap/portmap.yaml",
    ] {
        assert!(
            stage.path().join(file).is_file(),
            "{file} was not installed\n{out}"
        );
    }
    let units: Vec<PathBuf> = UNITS.iter().map(|u| unitdir.join(u)).collect();
    for unit in &units {
        let text = std::fs::read_to_string(unit).expect("read unit");
        assert!(text.contains("ExecStart=/usr/local/sbin/portmap "), "{text}");
    }
    // The example configuration is valid, and a second install keeps an edited one.
    let example = stage.path().join("etc/portmap/portmap.yaml");
    let out = run(
        PORTMAP.binary(),
        &["validate", "-c", path_str(&example)],
        None,
        None,
    );
    assert!(out.ok(), "{out}");
    std::fs::write(&example, "# mine\n").expect("edit the config");
    let out = install(stage.path());
    assert!(out.stdout.contains("kept the existing"), "{out}");
    assert_eq!(std::fs::read_to_string(&example).expect("read"), "# mine\n");

    // ExecReload= of the watch names /bin/kill: give the staged root one.
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a kill binary");
    std::fs::create_dir_all(stage.path().join("bin")).expect("mkdir bin");
    std::fs::copy(kill, stage.path().join("bin/kill")).expect("copy kill");

    let out = verify(stage.path(), &units);
    assert!(
        out.ok() && out.stderr.trim().is_empty() && out.stdout.trim().is_empty(),
        "systemd-analyze verify refused the units\n{out}"
    );

    // The check can fail: a broken copy of each unit is refused.
    for (unit, broken) in units.iter().zip(["Type=oneshott", "Restart=on-failur"]) {
        let text = std::fs::read_to_string(unit).expect("read unit");
        let field = broken.split('=').next().expect("key");
        let bad = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{field}=")) {
                    broken
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(bad, text, "{field} not found in {}", unit.display());
        let copy = stage.path().join(format!(
            "broken-{}",
            unit.file_name().expect("name").to_string_lossy()
        ));
        std::fs::write(&copy, bad).expect("write broken copy");
        let out = verify(stage.path(), &[copy]);
        assert!(!out.stderr.trim().is_empty(), "a broken unit passed\n{out}");
    }
}

/// The capabilities the units leave portmap (`CapabilityBoundingSet=`), as setpriv spells them.
fn unit_capabilities() -> String {
    let mut sets = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(repo().join("dist/systemd").join(unit)).expect("read unit");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .unwrap_or_else(|| panic!("{unit} has no CapabilityBoundingSet="));
        let caps: Vec<String> = line
            .split_whitespace()
            .map(|c| {
                let name = c
                    .strip_prefix("CAP_")
                    .unwrap_or_else(|| panic!("not a capability: {c}"));
                format!("+{}", name.to_ascii_lowercase())
            })
            .collect();
        sets.push(caps.join(","));
    }
    assert!(
        sets.windows(2).all(|w| w[0] == w[1]),
        "the units differ: {sets:?}"
    );
    sets.remove(0)
}

/// `ip netns exec ROUTER setpriv <the units' bounding set> portmap --backend B args…`: portmap
/// started inside the router namespace, working there without `--netns` (as a unit runs it in the
/// host's), with no capability but the units'.
fn confined(t: &Topology, caps: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "netns".to_owned(),
        "exec".to_owned(),
        t.router.name().to_owned(),
        "setpriv".to_owned(),
        format!("--bounding-set=-all,{caps}"),
        "--inh-caps=-all".to_owned(),
        "--no-new-privs".to_owned(),
        PORTMAP.binary().to_owned(),
        "--backend".to_owned(),
        t.backend().to_owned(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

fn run_confined(t: &Topology, caps: &str, args: &[&str]) -> Run {
    let argv = confined(t, caps, args);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    run("ip", &refs, None, None)
}

const WEB: &str = "  - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n";

every_backend! {
/// What the units allow is what portmap needs: every writing and reading command, and the watch
/// (nft: healing a deleted table), with the units' capabilities only.
fn the_units_capabilities_are_enough(t) {
    let caps = unit_capabilities();
    let _web = t.tcp_server("192.168.1.66:80");
    let path = t.write_config(&config(WEB));
    let file = path_str(&path);
    for args in [
        vec!["apply", "-c", file, "--auto-approve"],
        vec!["plan", "-c", file, "--detailed-exitcode"],
        vec!["status", "--json"],
    ] {
        let out = run_confined(t, &caps, &args);
        assert!(out.ok(), "{out}");
    }
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    // Neither capability is spare: without CAP_NET_ADMIN nothing works, and iptables-legacy
    // opens a raw socket (CAP_NET_RAW).
    let out = run_confined(t, "+net_raw", &["status"]);
    assert_eq!(out.code, 1, "{out}");
    if t.backend() == "iptables-legacy" {
        let out = run_confined(t, "+net_admin", &["apply", "-c", file, "--auto-approve"]);
        assert_eq!(out.code, 1, "{out}");
    }

    let argv = confined(t, &caps, &["watch", "-c", file, "--interval", "0.5"]);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut d = Daemon::start("ip", &refs, &[]);
    d.wait_for("the kernel already matches", Duration::from_secs(20));
    match t.backend() {
        "nft" => t.router.output("nft", &["delete", "table", "inet", "portmap"]),
        "iptables-legacy" => t.router.output("iptables-legacy", &["-t", "nat", "-F", "PREROUTING"]),
        _ => t.router.output("iptables-nft", &["-t", "nat", "-F", "PREROUTING"]),
    };
    d.wait_for("repaired: ", Duration::from_secs(10));
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(10)), 0, "{}", d.log());

    let out = run_confined(t, &caps, &["destroy", "--auto-approve"]);
    assert!(out.ok(), "{out}");
    t.plan_json().expect_code(2);
}
}

#[test]
fn a_unit_capability_name_is_one_setpriv_knows() {
    require_root!();
    // A misspelt capability is silently dropped by systemd; setpriv refuses it.
    let caps = unit_capabilities();
    let out = run(
        "setpriv",
        &[&format!("--bounding-set=-all,{caps}"), "true"],
        None,
        None,
    );
    assert!(out.ok(), "{caps}: {out}");
    let out = run("setpriv", &["--bounding-set=-all,+net_admn", "true"], None, None);
    assert!(!out.ok(), "setpriv took a misspelt capability: {out}");
}
