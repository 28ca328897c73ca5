//! What only the iptables backend has, for both variants (`iptables-legacy`, `iptables-nft`), in
//! the lab's namespaces: a plan is several per-table commits, ordered so every state in between is
//! safe, and a failed second commit (injected with the backend's fault hook) leaves a safe state
//! that the next `portmap apply` repairs; what apply builds equals what `iptables-restore` of
//! `portmap render` builds; damage inside the dispatch tree is seen and repaired; the generation
//! moves with portmap's own commit and a plan made before another change is refused; the xtables
//! lock is waited for and a timeout said; a FORWARD drop in the other variant and a dropping native
//! nftables forward chain are warned about; `--backend iptables` is the variant `iptables -V`
//! names; and where `ip6tables-save` fails, portmap works with IPv4 alone.
//!
//! The router behaviour every backend shares (traffic, drift, foreign rules, conntrack, IPv6) is
//! tested in the other modules through `every_backend!`. Nothing here touches the host's
//! namespace: every iptables program runs in the lab's router.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use portmap::{ApplyOptions, Backend as _, IptablesBackend, IptablesVariant, Netns, Session};
use portmap_iptables::{Family, Table};
use portmap_testkit::topology::path_str;
use portmap_testkit::{CLIENT, OTHER_CLIENT, Topology, config, iptables, require_root, status_mapping};

use crate::PORTMAP;

/// Like `every_backend!`, for the two iptables variants only: module `name` with the tests
/// `iptables_legacy` and `iptables_nft`, each giving the body a fresh lab (`ipv6;` first: with
/// IPv6) whose `portmap` runs pass that `--backend`.
macro_rules! every_iptables {
    ($(#[doc = $doc:literal])* fn $name:ident($t:ident) $body:block) => {
        every_backend!(@lab new [iptables_legacy "iptables-legacy", iptables_nft "iptables-nft"];
            $(#[doc = $doc])* fn $name($t) $body);
    };
    (ipv6; $(#[doc = $doc:literal])* fn $name:ident($t:ident) $body:block) => {
        every_backend!(@lab with_ipv6 [iptables_legacy "iptables-legacy", iptables_nft "iptables-nft"];
            $(#[doc = $doc])* fn $name($t) $body);
    };
}

const WEB: &str = "  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n";
const SSH: &str =
    "  - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [203.0.113.2/32] }\n";

/// The lab's variant, as the library names it.
fn variant(t: &Topology) -> IptablesVariant {
    IptablesVariant::from_backend_name(t.backend()).expect("an iptables lab")
}

/// The lab's backend opened through the library, for what the CLI cannot reach (the fault hook,
/// the lock file).
fn backend(t: &Topology) -> IptablesBackend {
    IptablesBackend::open(variant(t), &Netns::Named(t.router.name().to_owned()), "portmap")
        .unwrap_or_else(|e| panic!("open: {e}"))
}

fn model(yaml: &str) -> portmap::Model {
    portmap::load_str(yaml, "test").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// IPv4 `iptables-save` of the lab's variant.
fn save4(t: &Topology) -> String {
    iptables::save(&t.router, t.variant().expect("an iptables lab"), false)
}

/// `n` YAML list items, one a line.
fn mappings(n: usize, item: impl Fn(usize) -> String) -> String {
    (0..n).fold(String::new(), |mut out, i| {
        out.push_str(&item(i));
        out.push('\n');
        out
    })
}

/// The warnings of `plan --json` for the lab's config file.
fn warnings(t: &Topology) -> Vec<String> {
    let plan = t.plan_json().json();
    plan["warnings"]
        .as_array()
        .map(|w| w.iter().map(portmap_testkit::scalar).collect())
        .unwrap_or_default()
}

every_iptables! {
/// The nat commit fails after filter's widening commit landed: the old forward still works, the
/// new one is not forwarded (its accept without its DNAT), no refused source gets in, status shows
/// the half-done mapping as damage, and the next `portmap apply` converges.
fn a_failed_second_commit_is_safe_and_the_next_apply_converges(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let _ssh = t.tcp_server("192.168.1.25:22");
    t.apply(&config(WEB)).success();

    let mut b = backend(t);
    let next = config(SSH);
    let plan = portmap::plan(&model(&next), &b.observe().expect("observe"));
    let order: Vec<(Family, Table, &str)> = b
        .steps(&plan, &plan.stale_flows())
        .expect("steps")
        .iter()
        .map(|s| (s.family, s.table, s.phase))
        .collect();
    assert_eq!(
        order,
        [
            (Family::V4, Table::Filter, "widen"),
            (Family::V4, Table::Nat, "nat"),
            (Family::V4, Table::Filter, "narrow")
        ]
    );
    b.fail_commit(Some((Family::V4, Table::Nat)));
    let err = Session::new(b)
        .apply(&plan, &ApplyOptions::default())
        .expect_err("the injected failure");
    let text = err.to_string();
    assert!(text.contains("refused the nat commit of table nat"), "{text}");
    assert!(text.contains("landed before it: iptables filter (widen)"), "{text}");

    // Safe in between: the old forward works, the new one is not forwarded, refused stays out.
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_tcp_blocked(CLIENT, 2222);
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    let status = t.portmap(&["status", "--json"]).success().json();
    assert_eq!(status_mapping(&status, "ssh")["state"], "damaged", "{status:#}");
    // The record of the cleanup was not written either (it goes with the nat commit).
    assert!(
        status["pending_flows"].as_array().is_none_or(Vec::is_empty),
        "{status:#}"
    );

    t.apply(&next).success();
    t.assert_tcp_blocked(CLIENT, 8080);
    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    t.plan_text().expect_code(0);
}
}

every_iptables! {
ipv6;
/// What `portmap apply` builds, read back with `iptables-save`, equals what `iptables-restore` of
/// `portmap render` builds in a second lab; and portmap reads that back as its own, intact and
/// equal to the configuration.
fn apply_and_render_build_the_same_chains(t) {
    let other = Topology::with_ipv6(PORTMAP, "conf2").with_backend(t.backend());
    let many = mappings(30, |i| {
        format!("  - {{ name: m{i}, protocol: both, port: {}, to: 192.168.1.70 }}", 20000 + i * 3)
    });
    let yaml = config(&format!(
            "{SSH}{WEB}{many}  - {{ name: cams, port: \"6000-6002\", to: 192.168.1.70, to_port: \"7000-7002\", description: \"a b\\\\c\" }}\n\
             \x20 - {{ name: web6.v6, port: 8080, to: \"2001:db8:2::66\", to_port: 80, allow_from: [\"2001:db8:1::/64\"] }}\n"
    ))
    .replace("masquerade: false", "masquerade: true")
    .replace("hairpin: false", "hairpin: true");
    t.apply(&yaml).success();
    let path = t.write_config(&yaml);
    let rendered = t.portmap(&["render", "-c", path_str(&path)]).success().stdout.clone();
    let (v4, v6) = portmap_iptables::render::split(&rendered);
    let variant = t.variant().expect("an iptables lab");
    iptables::restore(&other.router, variant, false, v4);
    iptables::restore(&other.router, variant, true, v6);
    for v6 in [false, true] {
        assert_eq!(
            iptables::save(&t.router, variant, v6),
            iptables::save(&other.router, variant, v6),
            "ipv6: {v6}"
        );
    }
    other.write_config(&yaml);
    other.plan_text().expect_code(0);
    let status = other.portmap(&["status", "--json"]).success().json();
    assert_eq!(status["state"], "intact", "{status:#}");
}
}

every_iptables! {
/// Damage only a tree of chains can have: a rule portmap did not write inside its chain, a jump
/// from a built-in chain gone, and a whole subtree cut off (its jump deleted, so its forwards
/// never arrive): status and plan name each, and one apply converges.
fn damage_inside_the_dispatch_tree_is_seen_and_repaired(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let many = mappings(40, |i| format!("  - {{ name: m{i}, port: {}, to: 192.168.1.70 }}", 10000 + i));
    let yaml = config(&format!("{SSH}{WEB}{many}"));
    t.apply(&yaml).success();
    let variant = t.variant().expect("an iptables lab");

    // A subtree's jump deleted: its mappings are damaged.
    let save = save4(t);
    let cut = iptables::delete_script(&save, "nat", |chain, spec| {
        chain == "PORTMAP-NT-0-65535" && spec.starts_with("-p tcp -m tcp --dport 8192:12287 ")
    })
    .unwrap_or_else(|| panic!("no subtree for 8192-12287:\n{save}"));
    iptables::restore(&t.router, variant, false, &cut);
    let status = t.portmap(&["status", "--json"]).success().json();
    let m5 = status_mapping(&status, "m5");
    assert!(m5["damage"].to_string().contains("never arrive"), "{m5:#}");
    assert!(t.tcp(CLIENT, 10005).is_err(), "the cut-off forward is gone");

    // A rule in portmap's chain that portmap did not write, and the jump from OUTPUT to its filter
    // chain gone.
    iptables::restore(
        &t.router,
        variant,
        false,
        "*nat\n-A PORTMAP-NT-0-65535 -p tcp -m tcp --dport 9999 -j DNAT --to-destination 192.168.1.70:1\nCOMMIT\n",
    );
    let save = save4(t);
    let jump = iptables::delete_script(&save, "filter", |chain, spec| {
        chain == "OUTPUT" && spec.ends_with("-j PORTMAP-FWD")
    })
    .expect("the jump from OUTPUT");
    iptables::restore(&t.router, variant, false, &jump);
    let status = t.portmap(&["status", "--json"]).success().json();
    assert_eq!(status["state"], "damaged", "{status:#}");
    let reasons = status["reasons"].to_string();
    assert!(reasons.contains("holds a rule portmap did not write"), "{reasons}");
    assert!(reasons.contains("the jump from OUTPUT to PORTMAP-FWD is missing"), "{reasons}");

    let plan = t.plan_text();
    plan.expect_code(2);
    assert!(plan.stdout.contains("never arrive"), "{plan}");
    t.apply(&yaml).success();
    t.plan_text().expect_code(0);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let reply = t.tcp(CLIENT, 10005);
    assert!(
        matches!(reply, Err(portmap_testkit::ConnError::Refused)),
        "m5 reaches 192.168.1.70:10005, where nothing listens: {reply:?}"
    );
    assert!(!save4(t).contains("--dport 9999"), "the foreign rule is gone");
}
}

every_iptables! {
/// iptables has no generation: portmap's is a hash of the other rules plus a serial its own
/// commits count. The generation a commit reports is the one observed right after it; another
/// tool's change moves it, so a plan made before is refused; and a plan made before a hand edit
/// of portmap's own chains is refused at commit too.
fn a_plan_made_before_another_change_is_refused(t) {
    let mut s = Session::new(backend(t));
    let wanted = model(&config(&format!("{SSH}{WEB}")));
    let p = portmap::plan(&wanted, &s.observe().expect("observe"));
    iptables::restore(
        &t.router,
        t.variant().expect("an iptables lab"),
        false,
        "*filter\n:OTHER - [0:0]\n-A OTHER -j RETURN\nCOMMIT\n",
    );
    let err = s.apply(&p, &ApplyOptions::default()).expect_err("stale");
    assert!(err.is_race(), "{err}");
    assert!(!save4(t).contains("PORTMAP"), "nothing was applied");

    // Planned afresh, it applies, and the commit says which generation it left.
    let p = portmap::plan(&wanted, &s.observe().expect("observe"));
    let report = s.apply(&p, &ApplyOptions::default()).expect("apply");
    let after = s.observe().expect("observe").generation;
    assert!(report.generation.is_some(), "{report:?}");
    assert_eq!(report.generation, after);
    assert_ne!(after, p.generation, "portmap's own commit moves it");

    // A plan made before portmap's own chains were edited by hand is refused at commit.
    let next = model(&config("  - { name: web, port: 8081, to: 192.168.1.66, to_port: 80 }\n"));
    let p = portmap::plan(&next, &s.observe().expect("observe"));
    iptables::restore(
        &t.router,
        t.variant().expect("an iptables lab"),
        false,
        "*nat\n-A PORTMAP-NT-0-65535 -p tcp -m tcp --dport 9 -j DNAT --to-destination 10.0.0.9:9\nCOMMIT\n",
    );
    let err = s.apply(&p, &ApplyOptions::default()).expect_err("stale");
    assert!(
        err.to_string().contains("changed the ruleset after this plan was made"),
        "{err}"
    );
    s.converge(&next).expect("planned afresh");
    assert!(!save4(t).contains("--dport 9 "), "the hand-written rule is gone");

    // A saved plan meets the same kind of edit through the CLI: refused, in words that name it.
    let path = t.write_config(&config(WEB));
    let plan_file = t.dir.path().join("saved.plan");
    t.portmap(&["plan", "-c", path_str(&path), "--out", path_str(&plan_file)])
        .success();
    iptables::restore(
        &t.router,
        t.variant().expect("an iptables lab"),
        false,
        "*nat\n-A PORTMAP-NT-0-65535 -p tcp -m tcp --dport 9 -j DNAT --to-destination 10.0.0.9:9\nCOMMIT\n",
    );
    let before = t.kernel();
    let run = t.portmap(&["apply", path_str(&plan_file)]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("were portmap's own rules changed by hand since?"),
        "{run}"
    );
    assert_eq!(t.kernel(), before, "nothing was applied");
}
}

#[test]
fn the_xtables_lock_is_waited_for_and_a_timeout_says_so() {
    require_root!();
    let t = Topology::new(PORTMAP, "xlock").with_backend("iptables-legacy");
    let lock = t.dir.path().join("xtables.lock");
    let file = std::fs::File::create(&lock).expect("lock file");
    let hold = || {
        // SAFETY: flock on a descriptor `file` owns for the rest of the test.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    };
    let release = || {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) }, 0);
    };
    let session = || {
        let mut b = backend(&t);
        b.set_lock_file(&lock);
        b.set_lock_wait(Duration::from_secs(1));
        Session::new(b)
    };
    let wanted = model(&config(&format!("{SSH}{WEB}")));

    // Held for longer than portmap waits: it gives up in words, and nothing is applied.
    hold();
    let started = Instant::now();
    let err = session().converge(&wanted).expect_err("the lock is held");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string()
            .contains("held the xtables lock for more than 1 s"),
        "{err}"
    );
    assert!(!save4(&t).contains("PORTMAP"), "nothing was applied");

    // Released while portmap waits: the apply goes through.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(400));
            release();
        });
        let started = Instant::now();
        session()
            .converge(&wanted)
            .expect("applied once the lock was free");
        assert!(
            started.elapsed() >= Duration::from_millis(350),
            "{:?}",
            started.elapsed()
        );
    });
    t.write_config(&config(&format!("{SSH}{WEB}")));
    t.plan_text().expect_code(0);
}

every_iptables! {
/// Legacy and nft rules both run: a FORWARD policy of DROP in the *other* variant drops what
/// portmap's variant accepts, and plan says so until it accepts; so does a native nftables forward
/// chain that drops.
fn a_forward_drop_in_the_other_variant_is_warned_about(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let other = match t.variant() {
        Some("legacy") => "nft",
        _ => "legacy",
    };
    iptables::restore(&t.router, other, false, "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n");
    t.write_config(&config(&format!("{SSH}{WEB}")));
    let found = warnings(t);
    let want = format!("iptables-{other} filter, chain FORWARD has policy DROP");
    assert!(found.iter().any(|w| w.contains(&want)), "{want}: {found:?}");
    // And it does drop: portmap's accept does not override the other variant's policy.
    t.apply(&config(&format!("{SSH}{WEB}"))).success();
    t.assert_tcp_blocked(CLIENT, 8080);
    iptables::restore(&t.router, other, false, "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    assert!(!warnings(t).iter().any(|w| w.contains("FORWARD has policy DROP")));

    // A native nftables forward chain (firewalld's, fw4's) that drops is warned about too, until
    // it accepts DNAT-ed connections.
    t.router.nft_load(
        "table inet fw {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n}\n",
    );
    let found = warnings(t);
    assert!(
        found
            .iter()
            .any(|w| w.contains("nftables table inet fw, chain forward has policy drop")),
        "{found:?}"
    );
    t.assert_tcp_blocked(CLIENT, 8080);
    t.router
        .nft(&["add", "rule", "inet", "fw", "forward", "ct", "status", "dnat", "accept"])
        .success();
    assert!(warnings(t).iter().all(|w| !w.contains("inet fw")), "{:?}", warnings(t));
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
}
}

#[test]
fn the_system_variant_is_what_iptables_says() {
    require_root!();
    let t = Topology::new(PORTMAP, "sysvar").with_backend("iptables");
    let version = t.router.output("iptables", &["-V"]);
    let want = if version.contains("nf_tables") {
        "iptables-nft"
    } else {
        "iptables-legacy"
    };
    t.apply(&config(WEB)).success();
    let status = t.portmap(&["status", "--json"]).success().json();
    assert_eq!(
        status["backend"], want,
        "`iptables -V` says {version}: {status:#}"
    );
    let variant = want.trim_start_matches("iptables-");
    assert!(
        iptables::save(&t.router, variant, false).contains("-j PORTMAP-PRE"),
        "the rules are in {want}"
    );
}

every_iptables! {
/// Where IPv6 rules cannot be read, portmap works with IPv4 alone. With IPv6 switched off in the
/// namespace (`net.ipv6.conf.all.disable_ipv6=1`) ip6tables still works, and so does portmap. Where
/// `ip6tables-save` fails (iptables-nft on an `ip6 nat` table with a rule it cannot translate, as
/// a native nftables tool writes it), a configuration without IPv6 mappings applies, reads back
/// intact and is destroyed again; one with IPv6 mappings is warned about in plan and refused by
/// apply in words, with nothing written.
fn without_ipv6_rules_portmap_works_with_ipv4_alone(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.router.sysctl("net.ipv6.conf.all.disable_ipv6=1");
    t.apply(&config(WEB)).success();
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.plan_text().expect_code(0);
    t.portmap(&["destroy", "--auto-approve"]).success();
    if t.variant() != Some("nft") {
        // ip6tables-legacy-save cannot be made to fail inside a namespace.
        return;
    }

    t.router.nft_load(
        "table ip6 nat {\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\
         \t\tip6 saddr ::1 meta mark set 5\n\t}\n}\n",
    );
    let failing = t.router.exec("ip6tables-nft-save", &[]);
    assert!(!failing.ok(), "ip6tables-nft-save must fail for this test to mean anything:\n{failing}");

    let run = t.apply(&config(&format!("{WEB}{SSH}")));
    run.success();
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    t.plan_text().expect_code(0);
    let status = t.portmap(&["status", "--json"]).success().json();
    assert_eq!(status["state"], "intact", "{status:#}");
    assert!(warnings(t).is_empty(), "no IPv6 mapping, nothing to say: {:?}", warnings(t));

    let with_v6 = config(&format!(
        "{WEB}  - {{ name: web6, port: 8080, to: \"2001:db8:2::66\", to_port: 80 }}\n"
    ));
    t.write_config(&with_v6);
    let found = warnings(t);
    assert!(
        found.iter().any(|w| w.contains("ip6tables-nft-save failed (exit 3)")
            && w.contains("so the IPv6 mapping web6 cannot be applied")),
        "{found:?}"
    );
    let before = save4(t);
    let run = t.apply(&with_v6);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("the configuration has IPv6 mappings (web6), but ip6tables-nft-save failed"),
        "{run}"
    );
    assert_eq!(save4(t), before, "nothing was written");

    t.portmap(&["destroy", "--auto-approve"]).success();
    assert!(!save4(t).contains("PORTMAP"), "{}", save4(t));
    assert!(t.tcp(CLIENT, 8080).is_err());
}
}
