//! `portmap completions SHELL` and `portmap man`: shell completion scripts and manual pages,
//! generated from the clap definition of the command line itself (`clap_complete`, `clap_mangen`), so
//! they list exactly the commands and options this binary has. The Debian package ships both.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use clap_mangen::Man;

use crate::{ExitStatus, say, shown_path};

/// A shell `portmap completions` writes a script for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    /// bash (Debian: `/usr/share/bash-completion/completions/portmap`).
    Bash,
    /// zsh (Debian: `/usr/share/zsh/vendor-completions/_portmap`).
    Zsh,
    /// fish (Debian: `/usr/share/fish/vendor_completions.d/portmap.fish`).
    Fish,
}

/// The completion script for `shell` on standard output. Hidden commands (the watchdog `apply
/// --confirm` starts) are not offered: `clap_complete` leaves them out of zsh and fish scripts but
/// lists them in bash's word lists (`opts="…"`), from which they are removed here.
pub(crate) fn completions(shell: Shell, mut cmd: clap::Command) -> Result<ExitStatus> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut cmd, "portmap", &mut script);
    let mut script = String::from_utf8_lossy(&script).into_owned();
    if matches!(shell, Shell::Bash) {
        let hidden: Vec<String> = cmd
            .get_subcommands()
            .filter(|s| s.is_hide_set())
            .map(|s| format!(" {}", s.get_name()))
            .collect();
        script = script
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("opts=\"") {
                    hidden
                        .iter()
                        .fold(line.to_owned(), |l, h| l.replace(h.as_str(), ""))
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
    }
    say(&script)?;
    Ok(ExitStatus::Success)
}

/// The section of the manual portmap is in: system administration (it lives in /usr/sbin).
const SECTION: &str = "8";

/// What the main page says beyond the options and commands: exit status, environment, files.
const EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success; with \fBplan \-\-detailed\-exitcode\fR, no changes pending.
.TP
\fB1\fR
An error: an invalid configuration (every problem is reported as FILE:LINE:COLUMN: FIELD: MESSAGE), a refused transaction, a missing privilege, a usage error. Nothing reached the kernel unless the message says so.
.TP
\fB2\fR
Changes are pending (\fBplan \-\-detailed\-exitcode\fR only).
.SH ENVIRONMENT
.TP
\fBPORTMAP_LOG\fR
A tracing filter (such as \fBportmap=debug\fR) that overrides \fB\-v\fR and \fB\-q\fR.
.TP
\fBNO_COLOR\fR
When set and not empty, no colour is used even on a terminal.
.SH FILES
.TP
\fI/etc/portmap/portmap.yaml\fR
The configuration read when no \fB\-c\fR is given.
.TP
\fI/usr/share/portmap/portmap.schema.json\fR
The JSON Schema of the configuration (\fBportmap schema\fR), for editors.
.TP
\fI/run/portmap/\fR
Write locks and pending confirmations.
.TP
\fI/usr/share/doc/portmap/\fR
The configuration reference, the operations guide and examples.
"#;

/// `portmap man`: portmap(8) on standard output; with `dir`, portmap(8) and one page per command
/// (portmap-apply(8), …) written there, their paths printed.
pub(crate) fn man(cmd: clap::Command, dir: Option<&Path>) -> Result<ExitStatus> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = dir else {
        say(&ascii_roff(&main_page(&cmd)?))?;
        return Ok(ExitStatus::Success);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", shown_path(dir)))?;
    let mut pages = vec![(format!("portmap.{SECTION}"), main_page(&cmd)?)];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = Man::new(sub.clone())
            .section(SECTION)
            .date(date())
            .manual("portmap manual");
        let mut text = Vec::new();
        page.render(&mut text)?;
        text.extend_from_slice(format!(".SH \"SEE ALSO\"\n\\fBportmap\\fR({SECTION})\n").as_bytes());
        pages.push((page.get_filename(), text));
    }
    for (name, text) in pages {
        let path = dir.join(&name);
        std::fs::write(&path, ascii_roff(&text))
            .with_context(|| format!("cannot write {}", shown_path(&path)))?;
        say(&format!("{}\n", shown_path(&path)))?;
    }
    Ok(ExitStatus::Success)
}

/// The pages' date, `YYYY-MM-DD`: that of `SOURCE_DATE_EPOCH` when set (reproducible builds, as
/// the Debian package is made), else today's (UTC).
fn date() -> String {
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let (y, m, d) = civil_from_days(i64::try_from(seconds / 86_400).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Roff as linters want it: every character outside ASCII written as a groff escape (`…` →
/// `\[u2026]`), since troff reads its input as Latin-1 unless a preprocessor converts it and warns
/// about UTF-8 bytes; and `clap_mangen`'s paragraph break `.br`, blank line, `.br` written as the
/// `.sp` it means (mandoc warns about the `.br`s around a blank line).
fn ascii_roff(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text).replace("\n.br\n\n.br\n", "\n.sp\n");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let _ = write!(out, "\\[u{:04X}]", u32::from(c));
        }
    }
    out
}

/// portmap(8): the options, the commands (each with its own page), exit status, environment, files.
fn main_page(cmd: &clap::Command) -> Result<Vec<u8>> {
    let page = Man::new(cmd.clone())
        .section(SECTION)
        .date(date())
        .manual("portmap manual");
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    page.render_subcommands_section(&mut out)?;
    out.extend_from_slice(EXTRA.as_bytes());
    let mut see_also: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| {
            format!(
                "\\fBportmap\\-{}\\fR({SECTION})",
                s.get_name().replace('-', "\\-")
            )
        })
        .collect();
    see_also.extend(["\\fBnft\\fR(8)", "\\fBiptables\\fR(8)", "\\fBsystemctl\\fR(1)"].map(String::from));
    out.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}\n", see_also.join(",\n")).as_bytes());
    page.render_version_section(&mut out)?;
    Ok(out)
}
