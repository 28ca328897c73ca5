//! The trust promises with iptables, in namespaces: portmap owns only its marked chains and its
//! commented jumps (other tools' chains stay byte-identical, a chain of its prefix without the
//! marker is refused), observe sees damage as the kernel enforces it and one apply converges, a
//! plan made before another program changed the tables is refused, a failed second commit leaves
//! a safe state that the next apply repairs, what apply builds equals what `iptables-restore` of
//! `render` builds, and the xtables lock is waited for and reported.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::kit::{CLIENT, ConnError, Lab, OTHER, config, converge, model, observe, plan};
use portmap_core::{Backend, Change, TableState};
use portmap_iptables::{Error, Family, Table, Variant};

const SSH_WEB: &str = "  - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [203.0.113.2/32] }\n\
\x20 - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n";

/// Docker's chains and rules, as `docker` leaves them (policy DROP in FORWARD).
const DOCKER: &str = "*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8000 -j DNAT --to-destination 172.17.0.2:80
COMMIT
";

/// The save output without portmap's chains and jumps.
fn foreign_part(save: &str) -> String {
    save.lines()
        .filter(|l| !l.contains("PORTMAP"))
        .flat_map(|l| [l, "\n"])
        .collect()
}

fn foreign_untouched(variant: Variant) {
    let lab = Lab::new(&format!("docker-{}", variant.backend_name().len()));
    let _web = lab.tcp_server("192.168.1.66:80");
    let _ssh = lab.tcp_server("192.168.1.25:22");
    lab.restore(variant, false, DOCKER);
    let before = lab.save(variant, false);
    let mut b = lab.backend(variant);
    converge(&mut b, &model(&config(SSH_WEB)));
    // Forwarded through Docker's FORWARD policy DROP: portmap's accept comes first.
    assert_eq!(
        lab.tcp(CLIENT, 8080).expect("web").server.to_string(),
        "192.168.1.66:80"
    );
    assert_eq!(foreign_part(&lab.save(variant, false)), foreign_part(&before));
    // A change, then destroy: Docker's rules are as they were, byte for byte.
    converge(
        &mut b,
        &model(&config(
            "  - { name: web, port: 8081, to: 192.168.1.66, to_port: 80 }\n",
        )),
    );
    assert_eq!(foreign_part(&lab.save(variant, false)), foreign_part(&before));
    assert!(b.destroy().expect("destroy"));
    assert_eq!(lab.save(variant, false), before);
    assert!(!b.destroy().expect("destroy again"), "nothing left to destroy");
}

#[test]
fn other_tools_chains_stay_byte_identical_legacy() {
    require_root!();
    foreign_untouched(Variant::Legacy);
}

#[test]
fn other_tools_chains_stay_byte_identical_nft() {
    require_root!();
    foreign_untouched(Variant::Nft);
}

#[test]
fn a_chain_of_the_prefix_without_the_marker_is_never_touched() {
    require_root!();
    let variant = Variant::Legacy;
    let lab = Lab::new("foreign");
    lab.restore(
        variant,
        false,
        "*nat\n:PORTMAP-PRE - [0:0]\n-A PORTMAP-PRE -j RETURN\n-A PREROUTING -j PORTMAP-PRE\nCOMMIT\n",
    );
    let before = lab.save(variant, false);
    let mut b = lab.backend(variant);
    let e = b.observe().expect_err("foreign");
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    assert!(e.to_string().contains("did not create"), "{e}");
    let m = model(&config(SSH_WEB));
    let mut p = portmap_core::plan(&m, &portmap_core::Observed::missing(b.name(), "PORTMAP", None));
    p.generation = Some(0);
    assert!(b.commit(&p, &[]).is_err());
    assert!(matches!(b.destroy(), Err(Error::Foreign { .. })));
    assert_eq!(lab.save(variant, false), before);
}

#[test]
fn damage_is_seen_as_the_kernel_enforces_it_and_apply_converges() {
    require_root!();
    let variant = Variant::Nft;
    let lab = Lab::new("damage");
    let _ssh = lab.tcp_server("192.168.1.25:22");
    let _web = lab.tcp_server("192.168.1.66:80");
    let m = model(&config(SSH_WEB));
    let mut b = lab.backend(variant);
    converge(&mut b, &m);
    lab.tcp_blocked(OTHER, 2222);

    // The allow-list's drop deleted by hand: the port is open to everyone, and observe says so.
    let drop = "-p tcp -m conntrack --ctreplsrc 192.168.1.25 --ctorigdstport 2222 --ctreplsrcport 22 -m comment --comment ssh -j DROP";
    let out = lab.router.exec(
        "iptables-nft",
        &["-t", "filter", "-D", "PORTMAP-FT-0-65535"]
            .iter()
            .copied()
            .chain(drop.split(' '))
            .collect::<Vec<_>>(),
    );
    assert!(out.ok(), "{out}");
    assert!(
        lab.tcp(OTHER, 2222).is_ok(),
        "the kernel lets every source through now"
    );
    let o = observe(&mut b);
    let ssh = o.mappings.iter().find(|m| m.name == "ssh").expect("ssh");
    assert!(
        ssh.damage
            .iter()
            .any(|d| d == "tcp/2222 is not guarded by the allow-list: open to every source"),
        "{:?}",
        ssh.damage
    );
    let p = plan(&mut b, &m);
    assert!(matches!(p.changes.as_slice(), [Change::Repair { .. }]), "{p}");
    converge(&mut b, &m);
    assert_eq!(lab.tcp_blocked(OTHER, 2222), ConnError::Timeout);

    // A DNAT rule deleted, a rule added to portmap's chain, a jump removed: drift, then converged.
    let dnat = "-p tcp -m tcp --dport 8080 -m comment --comment web -j DNAT --to-destination 192.168.1.66:80";
    let delete_dnat = format!("-t nat -D PORTMAP-NT-0-65535 {dnat}");
    let commands: [Vec<&str>; 3] = [
        delete_dnat.split(' ').collect(),
        "-t nat -A PORTMAP-NT-0-65535 -p tcp --dport 9999 -j DNAT --to-destination 192.168.1.70:1"
            .split(' ')
            .collect(),
        vec![
            "-t",
            "filter",
            "-D",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "-m",
            "comment",
            "--comment",
            "portmap PORTMAP",
            "-j",
            "PORTMAP-FWD",
        ],
    ];
    for args in commands {
        let out = lab.router.exec("iptables-nft", &args);
        assert!(out.ok(), "{out}");
    }
    let o = observe(&mut b);
    let TableState::Damaged { reasons } = &o.state else {
        panic!("expected damage: {o:?}");
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("holds a rule portmap did not write")),
        "{reasons:?}"
    );
    let web = o
        .mappings
        .iter()
        .find(|m| m.name == "web")
        .expect("web's filter rule is still there");
    assert!(web.is_damaged(), "{web:?}");
    assert!(lab.tcp(CLIENT, 8080).is_err());
    converge(&mut b, &m);
    assert_eq!(
        lab.tcp(CLIENT, 8080).expect("web").server.to_string(),
        "192.168.1.66:80"
    );
    assert!(plan(&mut b, &m).is_empty());

    // A whole subtree unreachable (its jump deleted): its mappings are damaged, apply repairs.
    let many = (0..40)
        .map(|i| format!("  - {{ name: m{i}, port: {}, to: 192.168.1.70 }}\n", 10000 + i))
        .collect::<Vec<_>>()
        .concat();
    let m2 = model(&config(&format!("{SSH_WEB}{many}")));
    converge(&mut b, &m2);
    let save = lab.save(variant, false);
    let jump = save
        .lines()
        .find(|l| l.starts_with("-A PORTMAP-NT-0-65535 -p tcp -m tcp --dport 8192:12287"))
        .unwrap_or_else(|| panic!("{save}"))
        .trim_start_matches("-A ")
        .to_owned();
    let out = lab.router.exec(
        "iptables-nft",
        &["-t", "nat", "-D"]
            .iter()
            .copied()
            .chain(jump.split(' '))
            .collect::<Vec<_>>(),
    );
    assert!(out.ok(), "{out}");
    let o = observe(&mut b);
    let m5 = o.mappings.iter().find(|m| m.name == "m5").expect("m5");
    assert!(
        m5.damage.iter().any(|d| d.contains("never arrive")),
        "{:?}",
        m5.damage
    );
    converge(&mut b, &m2);
    assert!(b.destroy().expect("destroy"));
}

#[test]
fn a_plan_made_before_another_change_is_refused() {
    require_root!();
    let variant = Variant::Legacy;
    let lab = Lab::new("stale");
    let mut b = lab.backend(variant);
    let m = model(&config(SSH_WEB));
    let p = plan(&mut b, &m);
    lab.restore(
        variant,
        false,
        "*filter\n:OTHER - [0:0]\n-A OTHER -j RETURN\nCOMMIT\n",
    );
    let e = b.commit(&p, &[]).expect_err("stale");
    assert!(portmap_iptables::IptablesBackend::is_stale(&e), "{e}");
    assert!(
        !lab.save(variant, false).contains("PORTMAP"),
        "nothing was applied"
    );
    // Planned afresh, it applies, and the generation moves by exactly one (portmap's own commit).
    let p = plan(&mut b, &m);
    crate::kit::apply_plan(&mut b, &p);
    let after = observe(&mut b).generation;
    assert_eq!(after, p.generation.map(|g| g.wrapping_add(1)));
    // A plan made before portmap's own chains were edited by hand is refused too.
    let next = model(&config(
        "  - { name: web, port: 8081, to: 192.168.1.66, to_port: 80 }\n",
    ));
    let p = plan(&mut b, &next);
    lab.restore(
        variant,
        false,
        "*nat\n-A PORTMAP-NT-0-65535 -p tcp -m tcp --dport 9 -j DNAT --to-destination 10.0.0.9:9\nCOMMIT\n",
    );
    let e = b.commit(&p, &[]).expect_err("stale");
    assert!(portmap_iptables::IptablesBackend::is_stale(&e), "{e}");
    converge(&mut b, &next);
}

/// The nat commit fails after filter's widening commit landed: the old forward still works, the
/// new one is not forwarded (its accept without its DNAT), no refused source gets in, observe
/// shows the half-done mapping as damage, and the next apply converges.
fn second_commit_fails(variant: Variant) {
    let lab = Lab::new(&format!("atomic-{}", variant.backend_name().len()));
    let _web = lab.tcp_server("192.168.1.66:80");
    let _ssh = lab.tcp_server("192.168.1.25:22");
    let mut b = lab.backend(variant);
    converge(
        &mut b,
        &model(&config(
            "  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n",
        )),
    );
    let next = model(&config(
        "  - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [203.0.113.2/32] }\n",
    ));
    let p = plan(&mut b, &next);
    let steps = b.steps(&p, &p.stale_flows()).expect("steps");
    let order: Vec<(Family, Table, &str)> = steps.iter().map(|s| (s.family, s.table, s.phase)).collect();
    assert_eq!(
        order,
        [
            (Family::V4, Table::Filter, "widen"),
            (Family::V4, Table::Nat, "nat"),
            (Family::V4, Table::Filter, "narrow")
        ]
    );
    b.fail_commit(Some((Family::V4, Table::Nat)));
    let e = b.commit(&p, &p.stale_flows()).expect_err("injected");
    assert!(
        matches!(
            e,
            Error::Restore {
                table: Table::Nat,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("landed before it: iptables filter (widen)"),
        "{e}"
    );
    // Safe in between: the old forward works, the new one is not forwarded, refused stays out.
    assert_eq!(
        lab.tcp(CLIENT, 8080).expect("old forward").server.to_string(),
        "192.168.1.66:80"
    );
    lab.tcp_blocked(CLIENT, 2222);
    lab.tcp_blocked(OTHER, 2222);
    let o = observe(&mut b);
    let ssh = o
        .mappings
        .iter()
        .find(|m| m.name == "ssh")
        .expect("half-done ssh");
    assert!(ssh.is_damaged(), "{ssh:?}");
    // The record of the cleanup was not written either (it goes with the nat commit).
    assert!(o.pending_flows.is_empty());
    b.fail_commit(None);
    converge(&mut b, &next);
    assert!(lab.tcp(CLIENT, 8080).is_err(), "web is gone");
    assert_eq!(
        lab.tcp(CLIENT, 2222).expect("ssh").server.to_string(),
        "192.168.1.25:22"
    );
    lab.tcp_blocked(OTHER, 2222);
}

#[test]
fn a_failed_second_commit_is_safe_and_the_next_apply_converges_legacy() {
    require_root!();
    second_commit_fails(Variant::Legacy);
}

#[test]
fn a_failed_second_commit_is_safe_and_the_next_apply_converges_nft() {
    require_root!();
    second_commit_fails(Variant::Nft);
}

/// What apply builds, read back with `iptables-save`, equals what `iptables-restore` of `render`
/// builds in a second namespace.
fn conformance(variant: Variant) {
    let lab = Lab::with_ipv6(&format!("conf-{}", variant.backend_name().len()));
    let other = Lab::with_ipv6(&format!("conf2-{}", variant.backend_name().len()));
    let many = (0..30)
        .map(|i| {
            format!(
                "  - {{ name: m{i}, protocol: both, port: {}, to: 192.168.1.70 }}\n",
                20000 + i * 3
            )
        })
        .collect::<Vec<_>>()
        .concat();
    let m = model(&format!(
        "masquerade: true\n{}",
        config(&format!(
            "{SSH_WEB}{many}  - {{ name: cams, port: \"6000-6002\", to: 192.168.1.80, to_port: \"7000-7002\", description: \"a b\\\\c\" }}\n\
             \x20 - {{ name: web6.v6, port: 8080, to: \"2001:db8:2::66\", to_port: 80, allow_from: [\"2001:db8:1::/64\"] }}\n"
        ))
    ));
    let mut b = lab.backend(variant);
    converge(&mut b, &m);
    let rendered = b.render(&m).expect("render");
    let (v4, v6) = portmap_iptables::render::split(&rendered);
    other.restore(variant, false, v4);
    other.restore(variant, true, v6);
    for v6 in [false, true] {
        assert_eq!(lab.save(variant, v6), other.save(variant, v6), "ipv6: {v6}");
    }
    // And what render loaded, portmap reads back as intact and equal to the configuration.
    let mut b2 = other.backend(variant);
    assert!(plan(&mut b2, &m).is_empty(), "{}", plan(&mut b2, &m));
}

#[test]
fn apply_and_render_build_the_same_chains_legacy() {
    require_root!();
    conformance(Variant::Legacy);
}

#[test]
fn apply_and_render_build_the_same_chains_nft() {
    require_root!();
    conformance(Variant::Nft);
}

#[test]
fn the_xtables_lock_is_waited_for_and_a_timeout_says_so() {
    require_root!();
    let lab = Lab::new("lock");
    let dir = std::env::temp_dir().join(format!("portmap-lock-{}", std::process::id()));
    let lock = dir.with_extension("lock");
    let file = std::fs::File::create(&lock).expect("lock file");
    // SAFETY: flock on a descriptor `file` owns for the rest of the test.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut b = lab.backend(Variant::Legacy);
    b.set_lock_file(&lock);
    b.set_lock_wait(Duration::from_secs(1));
    let m = model(&config(SSH_WEB));
    let p = plan(&mut b, &m);
    let started = Instant::now();
    let e = b.commit(&p, &[]).expect_err("lock held");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, Error::Lock { .. }), "{e}");
    assert!(
        e.to_string().contains("held the xtables lock for more than 1 s"),
        "{e}"
    );
    assert!(!lab.save(Variant::Legacy, false).contains("PORTMAP"));
    drop(file);
    converge(&mut b, &m);
    let _ = std::fs::remove_file(&lock);
}

#[test]
fn a_forward_drop_in_the_other_variant_is_warned_about() {
    require_root!();
    let lab = Lab::new("coexist");
    lab.restore(Variant::Legacy, false, "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n");
    let mut b = lab.backend(Variant::Nft);
    let m = model(&config(SSH_WEB));
    let p = plan(&mut b, &m);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("iptables-legacy filter, chain FORWARD has policy DROP")),
        "{:?}",
        p.warnings
    );
    // And it does drop: the nft variant's accept does not override legacy's policy.
    let _web = lab.tcp_server("192.168.1.66:80");
    converge(&mut b, &m);
    assert!(lab.tcp(CLIENT, 8080).is_err());
    lab.restore(Variant::Legacy, false, "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n");
    assert!(lab.tcp(CLIENT, 8080).is_ok());

    // A native nftables forward chain (firewalld's, fw4's) that drops is warned about too, until it
    // accepts DNAT-ed connections.
    let fw =
        "table inet fw {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n}\n";
    let out = lab.router.exec_with_stdin("nft", &["-f", "-"], Some(fw));
    assert!(out.ok(), "{out}");
    let p = plan(&mut b, &m);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("nftables table inet fw, chain forward has policy drop")),
        "{:?}",
        p.warnings
    );
    assert!(
        !p.warnings.iter().any(|w| w.contains("FORWARD has policy DROP")),
        "{:?}",
        p.warnings
    );
    let out = lab.router.exec(
        "nft",
        &[
            "add", "rule", "inet", "fw", "forward", "ct", "status", "dnat", "accept",
        ],
    );
    assert!(out.ok(), "{out}");
    assert!(plan(&mut b, &m).warnings.iter().all(|w| !w.contains("inet fw")));
}

#[test]
fn the_system_variant_is_what_iptables_says() {
    require_root!();
    let lab = Lab::new("variant");
    let b = lab.backend(Variant::System);
    let version = lab.router.exec("iptables", &["-V"]);
    let want = if version.stdout.contains("nf_tables") {
        "iptables-nft"
    } else {
        "iptables-legacy"
    };
    assert_eq!(b.name(), want);
}
