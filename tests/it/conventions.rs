//! The conventions a command-line tool is expected to keep: shell completions that the shells
//! accept and that complete portmap's commands, manual pages that render without a warning, the
//! configuration's JSON Schema, `-v`/`-vv`/`-q` on standard error (never on standard output), and
//! the hints for a command line that is almost right. Commands that touch a kernel run in their
//! own namespace; `completions`, `man` and `schema` read nothing and run as they are.

use portmap_testkit::topology::path_str;
use portmap_testkit::{Netns, Run, TempDir, config, require_root, run};

use crate::PORTMAP;

/// `portmap ARGS` for the commands that never open a kernel backend.
fn offline(args: &[&str]) -> Run {
    run(PORTMAP.binary(), args, None, None)
}

/// `bash -c SCRIPT` with the completion script sourced first; stdout.
fn in_bash(script: &str, body: &str) -> Run {
    let dir = TempDir::new("compl");
    let path = dir.write("portmap.bash", script);
    let program = format!("source {}\n{body}", path_str(&path));
    run("bash", &["--norc", "--noprofile", "-c", &program], None, None)
}

/// What bash completes for the words typed so far (the last one being completed).
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let body = format!(
        "COMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n_portmap portmap '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words
            .get(words.len().wrapping_sub(2))
            .copied()
            .unwrap_or_default()
    );
    let out = in_bash(script, &body);
    out.success();
    out.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn bash_completion_is_valid_and_completes_commands_and_options() {
    let run = offline(&["completions", "bash"]);
    run.success();
    let script = &run.stdout;
    let dir = TempDir::new("compl-n");
    let path = dir.write("portmap.bash", script);
    run_ok("bash", &["-n", path_str(&path)]);
    let registered = in_bash(script, "complete -p portmap");
    registered.success();
    assert!(
        registered.stdout.contains("-F _portmap") && registered.stdout.trim_end().ends_with(" portmap"),
        "the script registers _portmap for portmap\n{registered}"
    );
    let commands = bash_completes(script, &["portmap", "p"]);
    assert_eq!(commands, ["plan"], "`portmap p<TAB>`");
    let all = bash_completes(script, &["portmap", ""]);
    for command in [
        "validate",
        "plan",
        "apply",
        "status",
        "watch",
        "destroy",
        "completions",
        "man",
        "schema",
    ] {
        assert!(
            all.iter().any(|c| c == command),
            "{command} is completed: {all:?}"
        );
    }
    assert!(
        !all.iter().any(|c| c == "confirm-watchdog"),
        "the internal command stays hidden: {all:?}"
    );
    let options = bash_completes(script, &["portmap", "apply", "--au"]);
    assert_eq!(options, ["--auto-approve"], "`portmap apply --au<TAB>`");
    let backends = bash_completes(script, &["portmap", "--backend", "ipt"]);
    assert_eq!(
        backends,
        ["iptables", "iptables-legacy", "iptables-nft"],
        "--backend values"
    );
    let mut shells = bash_completes(script, &["portmap", "completions", ""]);
    shells.retain(|w| !w.starts_with('-'));
    assert_eq!(shells, ["bash", "zsh", "fish"], "the shells, besides the options");
}

#[track_caller]
fn run_ok(program: &str, args: &[&str]) -> Run {
    let out = run(program, args, None, None);
    out.success();
    out
}

/// zsh and fish are installed by scripts/test.sh; a machine without them fails here, loudly.
#[test]
fn zsh_and_fish_accept_their_completion_scripts() {
    let dir = TempDir::new("compl-zf");
    let zsh = offline(&["completions", "zsh"]);
    zsh.success();
    assert!(zsh.stdout.starts_with("#compdef portmap"), "{zsh}");
    let zsh_path = dir.write("_portmap", &zsh.stdout);
    run_ok("zsh", &["-n", path_str(&zsh_path)]);
    // Loaded by compinit from a directory on fpath, the function is defined.
    let loaded = run_ok(
        "zsh",
        &[
            "-f",
            "-c",
            &format!(
                "fpath=({} $fpath); autoload -Uz compinit; compinit -u -D; autoload -Uz _portmap; whence -w _portmap",
                path_str(dir.path())
            ),
        ],
    );
    assert!(loaded.stdout.contains("_portmap: function"), "{loaded}");

    let fish = offline(&["completions", "fish"]);
    fish.success();
    let fish_path = dir.write("portmap.fish", &fish.stdout);
    run_ok("fish", &["--no-execute", path_str(&fish_path)]);
    let completed = run_ok(
        "fish",
        &[
            "--no-config",
            "-c",
            &format!("source {}; complete -C 'portmap pla'", path_str(&fish_path)),
        ],
    );
    assert!(
        completed.stdout.lines().any(|l| l.starts_with("plan")),
        "{completed}"
    );
}

#[test]
fn man_pages_render_without_warnings() {
    let main = offline(&["man"]);
    main.success();
    assert!(
        main.stdout.starts_with(".ie \\n(.g") || main.stdout.contains(".TH portmap 8"),
        "{main}"
    );
    assert!(
        main.stdout.is_ascii(),
        "roff is ASCII; other characters are escaped"
    );
    let dir = TempDir::new("man");
    let listed = offline(&["man", "--dir", path_str(dir.path())]);
    listed.success();
    let pages: Vec<&str> = listed.stdout.lines().collect();
    for name in [
        "portmap.8",
        "portmap-apply.8",
        "portmap-plan.8",
        "portmap-completions.8",
    ] {
        assert!(
            pages.iter().any(|p| p.ends_with(&format!("/{name}"))),
            "{name} in {pages:?}"
        );
    }
    assert!(
        !pages.iter().any(|p| p.contains("watchdog")),
        "no page for the internal command"
    );
    let written = std::fs::read_to_string(dir.path().join("portmap.8")).expect("portmap.8");
    assert_eq!(
        written, main.stdout,
        "`man` and `man --dir` write the same portmap(8)"
    );
    for page in &pages {
        // groff with every warning on: any warning fails the test.
        let groff = run_ok("groff", &["-man", "-Tutf8", "-ww", "-z", page]);
        assert!(
            groff.stderr.trim().is_empty(),
            "groff warns about {page}:\n{groff}"
        );
        let lint = run("mandoc", &["-T", "lint", "-W", "warning", page], None, None);
        assert!(
            lint.stdout.trim().is_empty() && lint.stderr.trim().is_empty(),
            "mandoc warns about {page}:\n{lint}"
        );
        let shown = run_ok("man", &["-l", "-P", "cat", page]);
        assert!(shown.stdout.contains("NAME"), "{page} renders:\n{shown}");
    }
    let shown = run_ok(
        "man",
        &["-l", "-P", "cat", &format!("{}/portmap.8", path_str(dir.path()))],
    );
    for section in [
        "SYNOPSIS",
        "OPTIONS",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(
            shown.stdout.contains(section),
            "portmap(8) has {section}\n{}",
            shown.stdout
        );
    }
    assert!(shown.stdout.contains("portmap-apply(8)"), "{}", shown.stdout);
}

#[test]
fn schema_prints_the_configuration_schema() {
    let out = offline(&["schema"]);
    out.success();
    let schema = out.json();
    assert_eq!(schema, portmap::config_schema(), "the library's schema, as JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["required"], serde_json::json!(["wan"]));
}

fn router(tag: &str) -> Netns {
    Netns::with_links(tag, &["wan0", "lan0"])
}

const WEB: &str = "  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }";

#[test]
fn verbose_says_what_was_read_planned_and_sent_on_stderr_only() {
    require_root!();
    let ns = router("verbose");
    let dir = TempDir::new("verbose");
    let path = dir.write("portmap.yaml", &config(WEB));
    let file = path_str(&path);

    let quiet_plan = PORTMAP.run(&["--netns", ns.name(), "plan", "-c", file]);
    quiet_plan.success();
    assert!(
        !quiet_plan.stderr.contains("INFO"),
        "no log lines by default:\n{quiet_plan}"
    );
    let plan = PORTMAP.run(&["--netns", ns.name(), "-v", "plan", "-c", file]);
    plan.success();
    assert_eq!(plan.stdout, quiet_plan.stdout, "-v leaves standard output alone");
    for line in [
        "read the configuration",
        "observed the kernel",
        "planned create=1",
    ] {
        assert!(plan.stderr.contains(line), "-v says `{line}`:\n{plan}");
    }
    let bytes = std::fs::metadata(&path).expect("config").len();
    assert!(
        plan.stderr
            .contains(&format!("bytes={bytes} mappings=1 disabled=0 elapsed=")),
        "the size of what was read and the time it took:\n{plan}"
    );

    let apply = PORTMAP.run(&["--netns", ns.name(), "-v", "apply", "-c", file, "--auto-approve"]);
    apply.success();
    let sent = apply
        .stderr
        .lines()
        .find(|l| l.contains("sent the transaction"))
        .unwrap_or_else(|| panic!("-v says what was sent:\n{apply}"));
    assert!(
        sent.contains("messages=") && sent.contains("objects=") && sent.contains("elapsed="),
        "{sent}"
    );
    assert!(
        !apply.stdout.contains("INFO"),
        "logs never reach standard output:\n{apply}"
    );

    // -vv: each planned change and, with nft, the batch.
    let edited = dir.write("portmap.yaml", &config(&WEB.replace("8080", "8081")));
    let debug = PORTMAP.run(&[
        "--netns",
        ns.name(),
        "-vv",
        "apply",
        "-c",
        path_str(&edited),
        "--auto-approve",
    ]);
    debug.success();
    assert!(
        debug
            .stderr
            .contains("planned change mapping=\"web\" kind=\"update\""),
        "{debug}"
    );
    assert!(debug.stderr.contains("sending one netlink batch"), "{debug}");
}

#[test]
fn quiet_silences_warnings_but_not_errors() {
    require_root!();
    // A fresh namespace forwards nothing (ip_forward = 0): plan warns about it.
    let ns = router("quiet");
    let dir = TempDir::new("quiet");
    let path = dir.write("portmap.yaml", &config(WEB));
    let file = path_str(&path);
    let loud = PORTMAP.run(&["--netns", ns.name(), "plan", "-c", file]);
    loud.success();
    assert!(
        loud.stderr.contains("IPv4 forwarding is disabled"),
        "a warning by default:\n{loud}"
    );
    let quiet = PORTMAP.run(&["--netns", ns.name(), "-q", "plan", "-c", file]);
    quiet.success();
    assert!(quiet.stderr.trim().is_empty(), "-q: nothing but errors:\n{quiet}");
    assert_eq!(quiet.stdout, loud.stdout, "-q leaves standard output alone");

    let bad = dir.write(
        "bad.yaml",
        &config("  - { name: web, port: 0, to: 192.168.1.66 }"),
    );
    let error = PORTMAP.run(&["--netns", ns.name(), "-q", "validate", "-c", path_str(&bad)]);
    error.expect_code(1);
    assert!(
        error.stderr.contains("port 0 is out of range"),
        "errors still show:\n{error}"
    );

    let both = PORTMAP.run(&["--netns", ns.name(), "-q", "-v", "plan", "-c", file]);
    both.expect_code(1);
    assert!(both.stderr.contains("cannot be used with"), "{both}");
}

#[test]
fn a_configuration_given_where_a_plan_belongs_gets_the_command_meant() {
    require_root!();
    let ns = router("hint-apply");
    let dir = TempDir::new("hint-apply");
    let path = dir.write("portmap.yaml", &config(WEB));
    let file = path_str(&path);
    let apply = PORTMAP.run(&["--netns", ns.name(), "apply", file]);
    apply.expect_code(1);
    assert!(
        apply.stderr.contains(&format!(
            "{file} is a portmap configuration, not a plan saved by `portmap plan --out`; did you mean `portmap apply -c {file}`?"
        )),
        "{apply}"
    );
    assert_eq!(portmap_testkit::nft::ruleset(&ns), "", "nothing was applied");

    // A positional configuration to a command that takes -c.
    let plan = PORTMAP.run(&["--netns", ns.name(), "plan", file]);
    plan.expect_code(1);
    assert!(
        plan.stderr.contains(&format!(
            "tip: a configuration file is given with -c: `portmap plan -c {file}`"
        )),
        "{plan}"
    );

    // A real plan file that is damaged still says so.
    let junk = dir.write("plan.json", "{\"format_version\": 1, \"junk\": true}");
    let damaged = PORTMAP.run(&["--netns", ns.name(), "apply", path_str(&junk)]);
    damaged.expect_code(1);
    assert!(damaged.stderr.contains("is not a portmap plan"), "{damaged}");
    assert!(!damaged.stderr.contains("did you mean"), "{damaged}");
}

#[test]
fn counts_agree_with_their_nouns() {
    require_root!();
    let ns = router("plural");
    let dir = TempDir::new("plural");
    let path = dir.write("portmap.yaml", &config(WEB));
    let file = path_str(&path);
    let valid = PORTMAP.run(&["--netns", ns.name(), "validate", "-c", file]);
    valid.success();
    assert!(
        valid.stdout.contains("valid (1 mapping enabled, 0 disabled)"),
        "{valid}"
    );
    let applied = PORTMAP.run(&["--netns", ns.name(), "apply", "-c", file, "--auto-approve"]);
    applied.success();
    let destroy = PORTMAP.run(&["--netns", ns.name(), "destroy", "--auto-approve"]);
    destroy.success();
    assert!(destroy.stdout.contains("with its 1 mapping;"), "{destroy}");
    for run in [&valid, &applied, &destroy] {
        for wrong in [
            "1 mappings",
            "1 messages",
            "1 kernel objects",
            "1 lines",
            "1 errors",
        ] {
            assert!(!run.stdout.contains(wrong), "`{wrong}`:\n{run}");
        }
    }
}
