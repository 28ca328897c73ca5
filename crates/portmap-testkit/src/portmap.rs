//! Running the `portmap` binary under test, scratch directories for its config and plan files, the
//! YAML header every test config shares, and readers for its machine output (`file:line:col`
//! diagnostics, plan and status JSON).
//!
//! Safety net: [`Portmap::run`] refuses to start without `--netns NAME`, and starts the binary
//! *inside* that namespace (`ip netns exec NAME`), so a binary that ignored `--netns` still could not
//! touch the host's ruleset.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use crate::command::{Run, run};

/// The `portmap` binary under test. The kit cannot name it: `env!("CARGO_BIN_EXE_portmap")` exists
/// only while the `portmap` package's own tests compile, so they make one, once, and pass it on:
///
/// ```ignore
/// const PORTMAP: Portmap = Portmap::new(env!("CARGO_BIN_EXE_portmap"));
/// PORTMAP.run(&["--netns", ns.name(), "status", "--json"]).success();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Portmap {
    binary: &'static str,
}

/// Extra settings for one `portmap` run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions<'a> {
    /// Text on standard input (otherwise `/dev/null`).
    pub stdin: Option<&'a str>,
    /// Working directory (otherwise the test's).
    pub cwd: Option<&'a Path>,
    /// Namespace to start the process in, when it should differ from the `--netns` target.
    pub exec_in: Option<&'a str>,
}

impl Portmap {
    /// The binary at `binary` (an absolute path).
    pub const fn new(binary: &'static str) -> Portmap {
        Portmap { binary }
    }

    /// Path of the binary.
    pub fn binary(self) -> &'static str {
        self.binary
    }

    /// Run the binary with `args`, which must contain `--netns NAME` (or `--netns=NAME`); stdin is
    /// `/dev/null` and there is no controlling terminal. Returns exit code and both streams.
    #[track_caller]
    pub fn run(self, args: &[&str]) -> Run {
        self.run_with(&RunOptions::default(), args)
    }

    /// [`Portmap::run`] with options.
    #[track_caller]
    pub fn run_with(self, opts: &RunOptions<'_>, args: &[&str]) -> Run {
        let target = netns_arg(args).unwrap_or_else(|| {
            panic!(
                "refusing to run portmap without --netns (the host's ruleset must never be touched): {args:?}"
            )
        });
        let exec_in = opts.exec_in.unwrap_or(target);
        let mut full = vec!["netns", "exec", exec_in, self.binary];
        full.extend_from_slice(args);
        run("ip", &full, opts.stdin, opts.cwd)
    }
}

fn netns_arg<'a>(args: &[&'a str]) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == "--netns" {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix("--netns=")
        }
    })
}

/// The router-wide part of every test config: WAN `wan0`, LAN `lan0`, no masquerade, no hairpin;
/// `mappings` is the YAML list that follows `mappings:` (empty text means no mappings).
pub fn config(mappings: &str) -> String {
    let header =
        "wan:\n  interfaces: [wan0]\nlan:\n  interfaces: [lan0]\nmasquerade: false\nhairpin: false\n";
    if mappings.trim().is_empty() {
        format!("{header}mappings: []\n")
    } else {
        format!("{header}mappings:\n{}\n", mappings.trim_end())
    }
}

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

static DIRS: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    /// Create `portmap-test-<tag>-<pid>-<n>`.
    #[track_caller]
    pub fn new(tag: &str) -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("portmap-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write (or replace) `name` in the directory and return its path.
    #[track_caller]
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One `FILE:LINE:COL: field: message` line from standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What the binary printed as the file name.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// Everything after `COL: ` (the field, a colon, the message).
    pub text: String,
}

/// Every line of `stderr` shaped `FILE:LINE:COL: text` (FILE without blanks, LINE and COL numbers ≥ 1).
pub fn diagnostics(stderr: &str) -> Vec<Diagnostic> {
    stderr.lines().filter_map(parse_diagnostic).collect()
}

fn parse_diagnostic(line: &str) -> Option<Diagnostic> {
    let line = line.trim_end();
    // Try every colon as the end of FILE, so file names with colons still work.
    for (i, _) in line.match_indices(':') {
        let file = &line[..i];
        if file.is_empty() || file.contains(char::is_whitespace) {
            continue;
        }
        let rest = &line[i + 1..];
        let Some((l, rest)) = rest.split_once(':') else {
            continue;
        };
        let Some((c, rest)) = rest.split_once(':') else {
            continue;
        };
        let (Ok(l), Ok(c)) = (l.parse::<u32>(), c.parse::<u32>()) else {
            continue;
        };
        let Some(text) = rest.strip_prefix(' ') else {
            continue;
        };
        if l == 0 || c == 0 || text.is_empty() {
            continue;
        }
        return Some(Diagnostic {
            file: file.to_owned(),
            line: l,
            col: c,
            text: text.to_owned(),
        });
    }
    None
}

/// A JSON scalar as text: strings without quotes, numbers and booleans as written, `null` as "".
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A plan's `table_action` as one word (`keep`, `create`, `repair`, …), whether the binary prints it
/// as a string or as an object with an `action` field.
#[track_caller]
pub fn table_action(plan: &Value) -> String {
    match &plan["table_action"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("action").map(scalar).unwrap_or_default(),
        other => panic!("plan has no table_action: {other}\n{plan:#}"),
    }
}

/// `(mapping name, action)` for each entry of a plan's `changes`. The name is read from `name`, or
/// from the `mapping`, `after` or `before` object.
#[track_caller]
pub fn change_actions(plan: &Value) -> Vec<(String, String)> {
    let Some(changes) = plan["changes"].as_array() else {
        panic!("plan has no `changes` array:\n{plan:#}")
    };
    changes
        .iter()
        .map(|c| {
            let name = ["name"]
                .iter()
                .filter_map(|k| c.get(*k))
                .chain(
                    ["mapping", "after", "before"]
                        .iter()
                        .filter_map(|k| c.get(*k)?.get("name")),
                )
                .map(scalar)
                .next()
                .unwrap_or_default();
            (name, scalar(&c["action"]))
        })
        .collect()
}

/// The entry for mapping `name` in `status --json` output.
#[track_caller]
pub fn status_mapping<'a>(status: &'a Value, name: &str) -> &'a Value {
    let Some(list) = status["mappings"].as_array() else {
        panic!("status has no `mappings` array:\n{status:#}")
    };
    list.iter()
        .find(|m| m["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("status lists no mapping {name}:\n{status:#}"))
}

/// The absolute path of a file under the workspace's `tests/fixtures/` (the kit lives in
/// `crates/portmap-testkit`, two levels below the workspace root).
pub fn fixture(relative: &str) -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = kit.ancestors().nth(2).unwrap_or(kit);
    root.join("tests/fixtures").join(relative)
}
