//! CLI contract tests: exit codes, the `FILE:LINE:COL: field: message` error format, `-c -` (stdin),
//! plan JSON, `render` output that nft loads, and `--netns`. Each test that touches a kernel uses its own
//! namespace with `wan0` and `lan0` links; nothing runs against the host. The tests written
//! `every_backend! { … }` (exit codes of plan, `--netns`, missing privileges, bad `--table` names)
//! run once per backend; the rest are about the command line itself and run once.

use std::path::Path;

use portmap_testkit::topology::path_str;
use portmap_testkit::{
    BAD_FIXTURES, GOOD_FIXTURES, Netns, RunOptions, change_actions, config, fixture, require_root,
    table_action,
};

use crate::PORTMAP;

fn router(tag: &str) -> Netns {
    Netns::with_links(tag, &["wan0", "lan0"])
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn validate_accepts_the_good_fixtures() {
    require_root!();
    let ns = router("val-good");
    for name in GOOD_FIXTURES {
        let path = fixture(name);
        let run = PORTMAP.run(&["--netns", ns.name(), "validate", "-c", path_str(&path)]);
        run.success();
        assert!(
            run.stderr.trim().is_empty(),
            "{name}: a valid config prints no errors\n{run}"
        );
    }
    assert_eq!(
        portmap_testkit::nft::ruleset(&ns),
        "",
        "validate must not touch the kernel"
    );
}

#[test]
fn validate_rejects_the_bad_fixtures_with_positions() {
    require_root!();
    let ns = router("val-bad");
    for bad in BAD_FIXTURES {
        let path = bad.path();
        let run = PORTMAP.run(&["--netns", ns.name(), "validate", "-c", path_str(&path)]);
        bad.check(&run, Some(path_str(&path)));
    }
}

#[test]
fn validate_reports_every_error_at_once() {
    require_root!();
    let ns = router("val-all");
    let path = fixture("bad/several-errors.yaml");
    let run = PORTMAP.run(&["--netns", ns.name(), "validate", "-c", path_str(&path)]);
    run.expect_code(1);
    let lines: std::collections::BTreeSet<u32> = portmap_testkit::diagnostics(&run.stderr)
        .iter()
        .map(|d| d.line)
        .collect();
    assert!(
        lines.is_superset(&[9, 13, 15].into()),
        "expected errors on lines 9, 13 and 15, got {lines:?}\n{run}"
    );
}

#[test]
fn validate_suggests_the_key_that_was_meant() {
    require_root!();
    let ns = router("val-dym");
    let path = fixture("bad/unknown-key.yaml");
    let run = PORTMAP.run(&["--netns", ns.name(), "validate", "-c", path_str(&path)]);
    run.expect_code(1);
    let hint = portmap_testkit::diagnostics(&run.stderr)
        .into_iter()
        .find(|d| d.line == 8);
    assert!(
        hint.as_ref()
            .is_some_and(|d| d.text.contains("protocl") && d.text.contains("protocol")),
        "expected `protocl` with a did-you-mean `protocol` on line 8\n{run}"
    );
}

#[test]
fn validate_reads_the_config_from_stdin() {
    require_root!();
    let ns = router("val-stdin");
    let good = read(&fixture("both.yaml"));
    let opts = RunOptions {
        stdin: Some(&good),
        ..RunOptions::default()
    };
    PORTMAP
        .run_with(&opts, &["--netns", ns.name(), "validate", "-c", "-"])
        .success();

    for bad in BAD_FIXTURES {
        let text = read(&bad.path());
        let opts = RunOptions {
            stdin: Some(&text),
            ..RunOptions::default()
        };
        let run = PORTMAP.run_with(&opts, &["--netns", ns.name(), "validate", "-c", "-"]);
        bad.check(&run, None);
    }
}

#[test]
fn validate_names_a_relative_file_as_given() {
    require_root!();
    let ns = router("val-rel");
    let dir = fixture("");
    let opts = RunOptions {
        cwd: Some(&dir),
        ..RunOptions::default()
    };
    let run = PORTMAP.run_with(
        &opts,
        &["--netns", ns.name(), "validate", "-c", "bad/port-zero.yaml"],
    );
    run.expect_code(1);
    assert!(
        portmap_testkit::diagnostics(&run.stderr)
            .iter()
            .any(|d| d.file == "bad/port-zero.yaml" && d.line == 9),
        "expected `bad/port-zero.yaml:9:COL: …`\n{run}"
    );
}

#[test]
fn validate_fails_on_a_missing_file() {
    require_root!();
    let ns = router("val-miss");
    let run = PORTMAP.run(&[
        "--netns",
        ns.name(),
        "validate",
        "-c",
        "/nonexistent/portmap.yaml",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("/nonexistent/portmap.yaml"),
        "the error should name the file\n{run}"
    );
}

#[test]
fn plan_json_is_an_object_with_changes_and_summary() {
    require_root!();
    let ns = router("plan-json");
    let path = fixture("allow-lists.yaml");
    let run = PORTMAP.run(&["--netns", ns.name(), "plan", "-c", path_str(&path), "--json"]);
    run.success();
    let plan = run.json();
    assert!(plan.is_object(), "{plan:#}");
    assert_eq!(table_action(&plan), "create", "{plan:#}");
    let mut actions = change_actions(&plan);
    actions.sort();
    let want: Vec<(String, String)> = ["ssh", "vnc", "voip", "web"]
        .iter()
        .map(|n| ((*n).to_owned(), "create".to_owned()))
        .collect();
    assert_eq!(actions, want, "{plan:#}");
    assert_eq!(plan["summary"]["create"], 4, "{plan:#}");
    assert_eq!(plan["summary"]["update"], 0, "{plan:#}");
    assert_eq!(plan["summary"]["delete"], 0, "{plan:#}");
    assert!(
        !plan["summary"]["table"].is_null(),
        "summary.table is missing: {plan:#}"
    );
    assert_eq!(
        portmap_testkit::nft::ruleset(&ns),
        "",
        "plan must not touch the kernel"
    );
}

every_backend! {
fn plan_detailed_exitcode_says_changes_are_pending(t) {
    let path = fixture("ranges.yaml");
    let path = path_str(&path);
    t.portmap(&["plan", "-c", path, "--detailed-exitcode"]).expect_code(2);
    t.portmap(&["plan", "-c", path]).expect_code(0);
    t.portmap(&["apply", "-c", path, "--auto-approve"]).success();
    t.portmap(&["plan", "-c", path, "--detailed-exitcode"]).expect_code(0);
}
}

#[test]
fn plan_reads_the_config_from_stdin() {
    require_root!();
    let ns = router("plan-stdin");
    let yaml = config("\n  - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n");
    let opts = RunOptions {
        stdin: Some(&yaml),
        ..RunOptions::default()
    };
    let run = PORTMAP.run_with(&opts, &["--netns", ns.name(), "plan", "-c", "-", "--json"]);
    run.success();
    assert_eq!(
        change_actions(&run.json()),
        [("web".into(), "create".into())],
        "{run}"
    );

    // apply from stdin, then the same config from stdin plans nothing.
    PORTMAP
        .run_with(
            &opts,
            &["--netns", ns.name(), "apply", "-c", "-", "--auto-approve"],
        )
        .success();
    PORTMAP
        .run_with(
            &opts,
            &["--netns", ns.name(), "plan", "-c", "-", "--detailed-exitcode"],
        )
        .expect_code(0);
}

#[test]
fn render_prints_a_script_nft_loads() {
    require_root!();
    let ns = router("render");
    for name in GOOD_FIXTURES {
        let path = fixture(name);
        let run = PORTMAP.run(&["--netns", ns.name(), "render", "-c", path_str(&path)]);
        run.success();
        assert!(
            run.stdout.contains("table inet portmap"),
            "{name}: render output\n{run}"
        );
        assert_eq!(
            portmap_testkit::nft::ruleset(&ns),
            "",
            "{name}: render must not touch the kernel"
        );
        let check = ns.exec_with_stdin("nft", &["-c", "-f", "-"], Some(&run.stdout));
        assert!(
            check.ok(),
            "{name}: nft -c refuses the rendered script\n{check}\n{}",
            run.stdout
        );
    }
}

#[test]
fn render_reads_the_config_from_stdin() {
    require_root!();
    let ns = router("render-in");
    let path = fixture("both.yaml");
    let from_file = PORTMAP.run(&["--netns", ns.name(), "render", "-c", path_str(&path)]);
    from_file.success();
    let text = read(&path);
    let opts = RunOptions {
        stdin: Some(&text),
        ..RunOptions::default()
    };
    let from_stdin = PORTMAP.run_with(&opts, &["--netns", ns.name(), "render", "-c", "-"]);
    from_stdin.success();
    assert!(from_file.stdout.contains("table inet portmap"), "{from_file}");
    assert_eq!(from_stdin.stdout, from_file.stdout);
}

every_backend! {
/// Started in one namespace and told to work in another, portmap writes there only (the iptables
/// backend enters it for each program it runs; the nft backend opens its sockets in it).
fn netns_option_selects_the_namespace(t) {
    let elsewhere = router("netns-oth");
    let untouched = portmap_testkit::kernel::listing(&elsewhere);
    let path = fixture("both.yaml");
    let opts = RunOptions {
        exec_in: Some(elsewhere.name()),
        ..RunOptions::default()
    };
    t.portmap_with(&opts, &["apply", "-c", path_str(&path), "--auto-approve"])
        .success();
    assert!(t.owned().is_some(), "the rules belong in --netns");
    assert_eq!(
        portmap_testkit::kernel::listing(&elsewhere),
        untouched,
        "the namespace the process started in is untouched"
    );
    // Global options work after the subcommand too.
    let run = PORTMAP.run_with(
        &opts,
        &["status", "--json", "--netns", t.router.name(), "--backend", t.backend()],
    );
    run.success();
    assert_eq!(run.json()["mappings"].as_array().map(Vec::len), Some(3), "{run}");
}
}

#[test]
fn usage_errors_exit_1_not_2() {
    require_root!();
    let ns = router("usage");
    // 2 means "changes pending"; a mistyped command line must not look like that to a script.
    let run = PORTMAP.run(&["--netns", ns.name(), "frobnicate"]);
    run.expect_code(1);
    let run = PORTMAP.run(&["--netns", ns.name(), "plan", "--no-such-flag"]);
    run.expect_code(1);
}

#[test]
fn bad_option_values_say_what_is_valid() {
    require_root!();
    let ns = router("optvals");
    let before = ns.output("nft", &["list", "ruleset"]);
    for (args, wanted) in [
        (&["apply", "--confirm", "abc"][..], "e.g. --confirm 60"),
        (&["apply", "--confirm", "0"][..], "from 1 to 86400"),
        (
            &["apply", "--confirm", "99999999999999999999"][..],
            "from 1 to 86400",
        ),
        (&["apply", "--confirm=-5"][..], "from 1 to 86400"),
        (
            &["watch", "--metrics", "nope"][..],
            "e.g. 127.0.0.1:9300 or [::1]:9300",
        ),
        (&["watch", "--metrics", "127.0.0.1"][..], "give ADDR:PORT"),
        (
            &["watch", "--interval", "0"][..],
            "more than 0 and at most 3600 seconds",
        ),
    ] {
        let mut full = vec!["--netns", ns.name()];
        full.extend_from_slice(args);
        let run = PORTMAP.run(&full);
        run.expect_code(1);
        assert!(run.stderr.contains(wanted), "{args:?}: {run}");
        assert!(!run.stderr.contains("invalid digit"), "{args:?}: {run}");
    }
    assert_eq!(ns.output("nft", &["list", "ruleset"]), before);
}

/// Standard error of `validate` on a bad fixture, for the inline snapshots of the messages people read.
/// The binary runs in `tests/fixtures/` with a relative path, so the text does not depend on where the
/// checkout lives.
fn validate_stderr(fixture_file: &str) -> String {
    let ns = router("snap");
    let dir = fixture("");
    let opts = RunOptions {
        cwd: Some(&dir),
        ..RunOptions::default()
    };
    let run = PORTMAP.run_with(&opts, &["--netns", ns.name(), "validate", "-c", fixture_file]);
    run.expect_code(1);
    run.stderr
}

#[test]
fn validate_message_unknown_key() {
    require_root!();
    insta::assert_snapshot!(validate_stderr("bad/unknown-key.yaml"), @"
    error: bad/unknown-key.yaml is not a valid portmap configuration; nothing was changed:
    bad/unknown-key.yaml:8:5: mappings[0]: unknown key `protocl`; did you mean `protocol`?
    1 error in bad/unknown-key.yaml.
    ");
}

#[test]
fn validate_message_port_zero() {
    require_root!();
    insta::assert_snapshot!(validate_stderr("bad/port-zero.yaml"), @r#"
    error: bad/port-zero.yaml is not a valid portmap configuration; nothing was changed:
    bad/port-zero.yaml:9:11: mappings[0].port: port 0 is out of range; use 1-65535 or "A-B"
    1 error in bad/port-zero.yaml.
    "#);
}

#[test]
fn validate_message_overlapping_ports() {
    require_root!();
    insta::assert_snapshot!(validate_stderr("bad/overlapping-ports.yaml"), @"
    error: bad/overlapping-ports.yaml is not a valid portmap configuration; nothing was changed:
    bad/overlapping-ports.yaml:14:11: mappings[1].port: tcp port 8080 is also forwarded by mapping `web` (line 9: tcp 8080); each protocol and external port can belong to one enabled IPv4 mapping (and one IPv6 mapping), or give each mapping its own `listen` addresses
    1 error in bad/overlapping-ports.yaml.
    ");
}

#[test]
fn validate_message_hostile_name() {
    require_root!();
    insta::assert_snapshot!(validate_stderr("bad/hostile-name.yaml"), @r#"
    error: bad/hostile-name.yaml is not a valid portmap configuration; nothing was changed:
    bad/hostile-name.yaml:7:11: mappings[0].name: the name `web\"; flush ruleset; add table ip pwned;…` contains `\"`; use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit
    1 error in bad/hostile-name.yaml.
    "#);
}

#[test]
fn validate_message_several_errors() {
    require_root!();
    insta::assert_snapshot!(validate_stderr("bad/several-errors.yaml"), @r#"
    error: bad/several-errors.yaml is not a valid portmap configuration; nothing was changed:
    bad/several-errors.yaml:9:11: mappings[0].port: port 70000 is out of range; use 1-65535 or "A-B"
    bad/several-errors.yaml:13:15: mappings[1].protocol: unknown protocol `sctp`; use tcp, udp or both
    bad/several-errors.yaml:15:9: mappings[1].to: `192.168.1.300` is not an IPv4 address; give the inner host's address, e.g. 192.168.1.66 (host names are not resolved)
    3 errors in bad/several-errors.yaml.
    "#);
}

every_backend! {
fn without_cap_net_admin_says_so_in_one_sentence(t) {
    let before = t.kernel();
    // The same binary, run as `nobody` with every capability dropped, inside the test's namespace.
    let bin = PORTMAP.binary();
    let path = fixture("both.yaml");
    for args in [
        vec!["status"],
        vec!["plan", "-c", path_str(&path)],
        vec!["apply", "-c", path_str(&path), "--auto-approve"],
    ] {
        let mut argv = vec![
            "netns",
            "exec",
            t.router.name(),
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            bin,
            "--backend",
            t.backend(),
        ];
        argv.extend(args.iter().copied());
        let run = portmap_testkit::command::run("ip", &argv, None, None);
        assert_eq!(run.code, 1, "{run}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line, no backtrace: {run}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains("CAP_NET_ADMIN"),
            "{run}"
        );
    }
    assert_eq!(t.kernel(), before);
}
}

every_backend! {
/// A `--table` that is no name (nft: a table name; iptables: the chain prefix) is refused before
/// anything runs, for render and apply, whatever the backend.
fn hostile_table_names_are_refused_before_anything_runs(t) {
    let before = t.kernel();
    let path = fixture("both.yaml");
    let overlong = "a".repeat(300);
    let words = if t.is_nft() {
        "is not valid: use 1-64 characters"
    } else {
        "is not valid: use 1-12 characters"
    };
    for name in [
        r#"x"; flush ruleset; #"#,
        "with space",
        "1starts-with-digit",
        "",
        overlong.as_str(),
    ] {
        for args in [
            vec!["--table", name, "render", "-c", path_str(&path)],
            vec!["--table", name, "apply", "-c", path_str(&path), "--auto-approve"],
        ] {
            let run = t.portmap(&args);
            assert_eq!(run.code, 1, "{run}");
            assert!(run.stderr.contains(words), "{run}");
            assert!(
                run.stdout.is_empty(),
                "nothing may be printed for a bad name: {run}"
            );
        }
    }
    assert_eq!(t.kernel(), before, "the kernel is unchanged");
}
}

/// `portmap ARGS` started inside `ns` with standard output a pipe whose reading end is already
/// closed (what `portmap status | head -0` does to it): exit code and standard error.
fn with_closed_stdout(ns: &Netns, args: &[&str]) -> (i32, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe"
    );
    // SAFETY: pipe2 just returned these two descriptors, owned by nothing else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), PORTMAP.binary()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("run portmap {args:?}: {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    require_root!();
    let ns = router("epipe");
    let good = fixture("home-router.yaml");
    let good = path_str(&good);
    PORTMAP
        .run(&["--netns", ns.name(), "apply", "-c", good, "--auto-approve"])
        .success();
    for (args, code) in [
        (vec!["validate", "-c", good], 0),
        (vec!["render", "-c", good], 0),
        (vec!["status"], 0),
        (vec!["status", "--json"], 0),
        (vec!["plan", "-c", good], 0),
        (vec!["plan", "-c", good, "--json", "--detailed-exitcode"], 0),
        (vec!["plan", "-c", "/dev/null"], 1),
    ] {
        let mut full = vec!["--netns", ns.name()];
        full.extend(&args);
        let (got, stderr) = with_closed_stdout(&ns, &full);
        assert!(
            !stderr.contains("panicked") && got != 101,
            "{args:?}: a closed stdout must not panic (exit {got})\n{stderr}"
        );
        assert_eq!(got, code, "{args:?}: the command's own status\n{stderr}");
        if code == 0 {
            // Quietly: no error about the pipe (a plan's warnings still go to stderr).
            assert!(
                !stderr.contains("error") && !stderr.to_lowercase().contains("broken pipe"),
                "{args:?}: quietly\n{stderr}"
            );
        }
    }
    // A change still applies (and says so through its exit status) when nobody reads the output.
    let changed = portmap_testkit::TempDir::new("epipe");
    let one = changed.write(
        "one.yaml",
        &config("\n  - name: web\n    port: 8080\n    to: 192.168.1.66\n"),
    );
    let (got, stderr) = with_closed_stdout(
        &ns,
        &[
            "--netns",
            ns.name(),
            "apply",
            "-c",
            path_str(&one),
            "--auto-approve",
        ],
    );
    assert_eq!(got, 0, "{stderr}");
    let status = PORTMAP.run(&["--netns", ns.name(), "status", "--json"]);
    assert_eq!(
        status.json()["mappings"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
}

#[test]
fn input_is_read_only_up_to_its_size_limit() {
    require_root!();
    let ns = router("bounded");
    let dir = portmap_testkit::TempDir::new("bounded");
    // A sparse 40 MiB file: refused from its size, without reading it.
    let sparse = dir.path().join("sparse.yaml");
    std::fs::File::create(&sparse)
        .and_then(|f| f.set_len(40 << 20))
        .unwrap_or_else(|e| panic!("sparse file: {e}"));
    let started = std::time::Instant::now();
    for (args, expected) in [
        (
            vec!["validate", "-c", "/dev/zero"],
            "error: /dev/zero is larger than the 32 MiB portmap reads for a configuration; reading stopped there"
                .to_owned(),
        ),
        (
            vec!["validate", "-c", path_str(&sparse)],
            format!(
                "error: {} is 40 MiB, larger than the 32 MiB portmap reads for a configuration",
                path_str(&sparse)
            ),
        ),
        (
            vec!["apply", "/dev/zero"],
            "error: /dev/zero is larger than the 64 MiB portmap reads for a plan file; reading stopped there"
                .to_owned(),
        ),
    ] {
        let mut full = vec!["--netns", ns.name()];
        full.extend(&args);
        let run = PORTMAP.run(&full);
        run.expect_code(1);
        assert_eq!(run.stderr.trim_end(), expected, "{run}");
    }
    // Standard input: an endless stream is cut at the limit too.
    let endless = "#".repeat((32 << 20) + 10);
    let opts = RunOptions {
        stdin: Some(&endless),
        ..RunOptions::default()
    };
    let run = PORTMAP.run_with(&opts, &["--netns", ns.name(), "validate", "-c", "-"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr.trim_end(),
        "error: <stdin> is larger than the 32 MiB portmap reads for a configuration; reading stopped there",
        "{run}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "bounded reads must be quick: {:?}",
        started.elapsed()
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    require_root!();
    let ns = router("deep");
    let dir = portmap_testkit::TempDir::new("deep");
    let deep = dir.write("deep.yaml", &format!("wan: {}", "[".repeat(20_000)));
    let run = PORTMAP.run(&["--netns", ns.name(), "validate", "-c", path_str(&deep)]);
    run.expect_code(1);
    let found = portmap_testkit::diagnostics(&run.stderr);
    assert_eq!(found.len(), 1, "{run}");
    assert_eq!((found[0].line, found[0].col), (1, 261), "{run}");
    assert!(found[0].text.contains("more than 64 deep"), "{run}");
}

#[test]
fn a_netns_that_is_not_a_namespace_fails_at_once() {
    require_root!();
    let ns = router("nsfile");
    let dir = portmap_testkit::TempDir::new("nsfile");
    let fifo = dir.path().join("fifo");
    let c_fifo = std::ffi::CString::new(path_str(&fifo)).unwrap_or_default();
    // SAFETY: `c_fifo` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let plain = dir.write("plain", "");
    let opts = RunOptions {
        exec_in: Some(ns.name()),
        ..RunOptions::default()
    };
    let started = std::time::Instant::now();
    for (netns, what) in [
        (path_str(&fifo), "is a FIFO"),
        ("/dev/null", "is a character device"),
        (path_str(dir.path()), "is a directory"),
        (path_str(&plain), "is a plain file, not a mounted namespace"),
    ] {
        let run = PORTMAP.run_with(&opts, &["--netns", netns, "status"]);
        run.expect_code(1);
        assert_eq!(
            run.stderr.trim_end(),
            format!(
                "error: cannot enter network namespace {netns}: {netns} {what}; --netns takes a name under \
                 /run/netns or a namespace file such as /proc/PID/ns/net"
            ),
            "{run}"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a FIFO must not block: {:?}",
        started.elapsed()
    );
    let run = PORTMAP.run_with(&opts, &["--netns", "no-such-ns-here", "status"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("there is no /run/netns/no-such-ns-here"),
        "{run}"
    );
}

#[test]
fn entering_a_netns_without_cap_sys_admin_says_so() {
    require_root!();
    let target = router("nosysadm");
    let here = router("nosysadm-h");
    // Root with CAP_NET_ADMIN but without CAP_SYS_ADMIN, started in another namespace.
    let run = portmap_testkit::command::run(
        "ip",
        &[
            "netns",
            "exec",
            here.name(),
            "setpriv",
            "--bounding-set=-sys_admin",
            "--inh-caps=-sys_admin",
            PORTMAP.binary(),
            "--netns",
            target.name(),
            "status",
        ],
        None,
        None,
    );
    assert_eq!(run.code, 1, "{run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {run}");
    assert_eq!(
        lines[0],
        format!(
            "error: cannot enter network namespace {}: permission denied; entering a network namespace needs \
             CAP_SYS_ADMIN (run as root)",
            target.name()
        ),
        "{run}"
    );
}

#[test]
fn command_line_values_are_escaped_and_cut_in_errors() {
    require_root!();
    let ns = router("echo");
    let path = fixture("both.yaml");
    let hostile = format!("x\u{1b}[31m\"`{}", "y".repeat(10_000));
    let opts = RunOptions {
        exec_in: Some(ns.name()),
        ..RunOptions::default()
    };
    let shown = format!("x\\u{{1b}}[31m\\\"\\`{}…", "y".repeat(56));
    for (args, expected) in [
        (
            vec![
                "--netns",
                ns.name(),
                "--table",
                hostile.as_str(),
                "render",
                "-c",
                path_str(&path),
            ],
            format!(
                "error: table name `{shown}` is not valid: use 1-64 characters from A-Z a-z 0-9 _ - starting with a letter"
            ),
        ),
        (
            vec!["--netns", hostile.as_str(), "status"],
            format!("error: cannot enter network namespace {shown}: File name too long (os error 36)"),
        ),
        (
            vec!["--netns", ns.name(), "validate", "-c", hostile.as_str()],
            format!("error: cannot read configuration file {shown}: File name too long (os error 36)"),
        ),
    ] {
        let run = PORTMAP.run_with(&opts, &args);
        run.expect_code(1);
        assert_eq!(run.stderr.trim_end(), expected, "{run}");
        assert!(
            !run.stderr.contains('\u{1b}'),
            "no raw escape reaches the terminal: {run}"
        );
    }
}
