//! The `portmap` binary: parses the command line, sets up logging, calls the library and maps the
//! result to an exit code (0 success / no changes, 1 error, 2 changes pending with
//! `--detailed-exitcode`). It holds no logic a library user would need.

use std::fs::File;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use portmap::{
    BackendKind, Backends, MAX_CONFIG_BYTES, MAX_PLAN_BYTES, Model, Netns, Plan, Session, shown_arg,
    shown_size,
};

mod cli_confirm;
mod cli_docs;
mod cli_hints;
mod cli_json;
mod cli_log;

/// Declarative port forwarding for Linux routers: plan and apply nftables or iptables DNAT mappings.
#[derive(Debug, Parser)]
#[command(name = "portmap", version, about, propagate_version = true)]
struct Cli {
    /// Network namespace to work in: a name under /run/netns, or a path.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,

    /// Name of the table portmap owns (nft: family inet), or with an iptables backend the prefix
    /// of its chains (`portmap` means PORTMAP-…).
    #[arg(long, global = true, value_name = "NAME", default_value = portmap::DEFAULT_TABLE)]
    table: String,

    /// Kernel backend: nft, or iptables (legacy or nft variant; see docs/iptables.md).
    #[arg(long, global = true, value_enum, default_value_t = BackendArg::Nft)]
    backend: BackendArg,

    /// How long a command that writes waits for another writer of the same namespace and table
    /// (e.g. 60s, 500ms, 2m; 0: do not wait).
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s", value_parser = cli_confirm::parse_duration)]
    lock_timeout: Duration,

    /// Say more on standard error: -v what was read, planned and sent, with timings; -vv debug
    /// detail. Standard output is the same either way.
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Say only errors on standard error: no warnings, no notices.
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    /// nftables over netlink: one table, one atomic transaction (the default).
    Nft,
    /// iptables, the variant the system's `iptables` command is (`iptables -V`).
    Iptables,
    /// iptables-legacy (`x_tables`), through `iptables-legacy-restore`.
    IptablesLegacy,
    /// iptables-nft (the `nf_tables` compatibility layer), through `iptables-nft-restore`.
    IptablesNft,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VerifyArg {
    /// Trust the ruleset generation when nobody else wrote since the commit (the default).
    Generation,
    /// Read the whole table back and require an empty plan.
    ReadBack,
}

impl From<VerifyArg> for portmap::Verify {
    fn from(v: VerifyArg) -> Self {
        match v {
            VerifyArg::Generation => portmap::Verify::Generation,
            VerifyArg::ReadBack => portmap::Verify::ReadBack,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImportFrom {
    /// Native nftables tables.
    Nft,
    /// iptables and ip6tables, legacy and nft variants.
    Iptables,
    /// Both.
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Configuration file (`-` reads standard input).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "/etc/portmap/portmap.yaml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file and report every error with its position.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the result (or the errors, with file, line, column and field) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print what the backend's own tool loads for a configuration (`nft -f`, or
    /// `iptables-restore` with an iptables backend): the same ruleset apply builds.
    Render(ConfigArg),
    /// Show how the kernel differs from the configuration.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 2 when there are changes (0 none, 1 error).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan to apply it later with `portmap apply PLANFILE`.
        #[arg(long, value_name = "PLANFILE")]
        out: Option<PathBuf>,
    },
    /// Print a plan saved by `portmap plan --out` (it is checked, not applied).
    Show {
        /// The saved plan.
        #[arg(value_name = "PLANFILE")]
        planfile: PathBuf,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the kernel match the configuration (or a saved plan) in one transaction.
    Apply {
        /// Configuration file (`-` reads standard input); ignored when PLANFILE is given.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// A plan saved by `portmap plan --out`.
        #[arg(value_name = "PLANFILE", conflicts_with = "config")]
        planfile: Option<PathBuf>,
        /// Apply without asking.
        #[arg(long)]
        auto_approve: bool,
        /// Leave tracked connections of changed or removed mappings alone (they keep going to the
        /// old target until they end).
        #[arg(long)]
        keep_conntrack: bool,
        /// Roll the change back after SECONDS unless `portmap confirm` (or `yes` on the terminal)
        /// keeps it; a detached watchdog does the rollback, whatever happens to this process.
        #[arg(long, value_name = "SECONDS", conflicts_with = "planfile", value_parser = parse_confirm_seconds)]
        confirm: Option<u64>,
        /// How the commit is checked: `generation` trusts the kernel's ruleset generation when
        /// nobody else wrote since (nft; iptables always reads back), `read-back` reads the whole
        /// table again and requires an empty plan.
        #[arg(long, value_name = "HOW", default_value = "generation")]
        verify: VerifyArg,
        /// Print what was applied as JSON (with `"changed"`); needs --auto-approve or a PLANFILE.
        #[arg(long)]
        json: bool,
    },
    /// Keep a change applied with `apply --confirm` (stops its rollback).
    Confirm {
        /// Print what was settled as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Undo a change applied with `apply --confirm` now, instead of at its deadline.
    Rollback {
        /// Print what was settled as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The watchdog `apply --confirm` starts (internal).
    #[command(hide = true)]
    ConfirmWatchdog {
        /// The confirmation to watch.
        #[arg(long)]
        id: String,
    },
    /// Show the mappings the kernel holds now.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the configuration, then keep the kernel matching it: repair within a second what
    /// another program changes (nft: from the kernel's notifications; iptables: read every
    /// --interval), re-read the file on SIGHUP, stop on SIGTERM. Logs one line per event on
    /// standard error; tells systemd when it is ready (Type=notify).
    Watch {
        #[command(flatten)]
        config: ConfigArg,
        /// Seconds between reads of the kernel when nothing is announced (default 2 with iptables,
        /// which announces nothing; 60 with nft, as a safety net).
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        interval: Option<std::time::Duration>,
        /// Own the table (nft flag `owner`): no other program can change it and `nft flush
        /// ruleset` leaves it alone; `portmap apply` is then refused too (reload the watch instead).
        #[arg(long)]
        own: bool,
        /// Receive buffer for the kernel's notifications, in bytes (default 8 MiB).
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..))]
        event_buffer: Option<u32>,
        /// Serve Prometheus metrics (those of `portmap metrics`, and the watch's own) over HTTP at
        /// `GET /metrics` on ADDR:PORT, e.g. 127.0.0.1:9300 (in portmap's own network namespace).
        #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics_address)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Read the DNAT forwards other tools wrote (nft tables, iptables and ip6tables of both
    /// variants) and print a portmap configuration for them; the kernel is not changed.
    Import {
        /// Which rules to read.
        #[arg(long, value_enum, default_value_t = ImportFrom::All)]
        from: ImportFrom,
        /// Write the configuration to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// The interface facing the internet, instead of the one most rules name (repeatable).
        #[arg(long, value_name = "IFACE")]
        wan: Vec<String>,
    },
    /// Print Prometheus metrics (text format 0.0.4): per-mapping counters, table health, the last
    /// apply's time and outcome, and with -c whether the kernel differs from the configuration.
    Metrics {
        /// Configuration to compare the kernel with (`portmap_drift`).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print one line per new forwarded connection of the mappings with `log: true`, as the kernel
    /// logs them (nflog), until stopped.
    Log {
        /// Configuration whose `log_group` to read (default group 100).
        #[arg(short = 'c', long = "config", value_name = "FILE", conflicts_with = "group")]
        config: Option<PathBuf>,
        /// The nflog group to read.
        #[arg(long, value_name = "N")]
        group: Option<u16>,
        /// Stop after this many connections.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Print JSON, one object a line.
        #[arg(long)]
        json: bool,
    },
    /// Say what happens now to a packet for PROTO/PORT, from the live state: which mapping takes
    /// it, whether its source is admitted, the target, other tables' chains that drop it,
    /// forwarding, hairpin, the route to the target. One finding a line; exit 0 when it would be
    /// forwarded, 1 when not.
    Explain {
        /// The packet's protocol.
        #[arg(value_enum, ignore_case = true)]
        protocol: ProtocolArg,
        /// The public port it is sent to.
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Its source address (default: some host on the internet).
        #[arg(long, value_name = "ADDR")]
        from: Option<std::net::IpAddr>,
        /// The public address it is sent to (default: the router's WAN address).
        #[arg(long, value_name = "PUBLIC_ADDR")]
        to: Option<std::net::IpAddr>,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove portmap's table (or chains) and every mapping in it.
    Destroy {
        /// Destroy without asking.
        #[arg(long)]
        auto_approve: bool,
        /// Leave the tracked connections of the removed mappings alone.
        #[arg(long)]
        keep_conntrack: bool,
        /// Print what was removed as JSON (with `"changed"`); needs --auto-approve.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `portmap completions bash > /etc/bash_completion.d/portmap`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: cli_docs::Shell,
    },
    /// Print the manual page portmap(8) as roff (`portmap man | man -l -`), or write it and a page
    /// for each command into a directory.
    Man {
        /// Write portmap.8 and portmap-COMMAND.8 into DIR instead (their paths are printed).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the JSON Schema (draft 2020-12) of the configuration file, for editors and CI checks.
    Schema,
}

/// How the process ends.
enum ExitStatus {
    Success,
    Error,
    Changes,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        match s {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::Error => ExitCode::from(1),
            ExitStatus::Changes => ExitCode::from(2),
        }
    }
}

/// Set once standard output turned out to be a closed pipe: the rest of the output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Write `text` to standard output. A reader that went away (`portmap status | head -1`) is not an
/// error: the rest of the output is dropped quietly and the command goes on to its own exit
/// status (an apply still applies, a plan still says whether changes are pending). Any other
/// failure to write (a full disk) is an error. `print!` would panic on both.
fn say(text: &str) -> Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// [`say`] with a newline.
macro_rules! sayln {
    ($($arg:tt)*) => {
        say(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Write `text` to standard error. If that fails there is nowhere left to say so; `eprint!` would
/// panic.
fn tell(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: scripts read 2 as "changes pending".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            if err.use_stderr()
                && let Some(doc) = cli_json::usage_error(&err)
            {
                let _ = cli_json::emit(&doc);
                return ExitStatus::Error.into();
            }
            let _ = err.print();
            if let Some(tip) = cli_hints::usage(&err) {
                tell(&tip);
            }
            return if err.use_stderr() {
                ExitStatus::Error.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    cli_log::init(cli.verbose, cli.quiet);
    let result = run(&cli);
    if let Command::Apply { .. } = cli.command {
        record_apply(&cli, &result);
    }
    match result {
        Ok(status) => status.into(),
        Err(err) => {
            if let Some(command) = cli_json::json_command(&cli.command) {
                let _ = cli_json::emit(&cli_json::error(command, &err));
                return ExitStatus::Error.into();
            }
            let color = use_color(&std::io::stderr());
            let prefix = if color { "\x1b[1;31merror\x1b[0m" } else { "error" };
            tell(&format!("{prefix}: {err:#}\n"));
            ExitStatus::Error.into()
        }
    }
}

fn run(cli: &Cli) -> Result<ExitStatus> {
    let kind = match cli.backend {
        BackendArg::Nft => BackendKind::Nft,
        BackendArg::Iptables => BackendKind::Iptables(portmap::IptablesVariant::System),
        BackendArg::IptablesLegacy => BackendKind::Iptables(portmap::IptablesVariant::Legacy),
        BackendArg::IptablesNft => BackendKind::Iptables(portmap::IptablesVariant::Nft),
    };
    let out = std::io::stdout();
    let color = use_color(&out);
    match &cli.command {
        Command::Validate { config: c, json } => {
            let model = load(&c.config)?;
            if *json {
                cli_json::emit(&portmap::json::validate_document(&origin_of(&c.config), &model))?;
                return Ok(ExitStatus::Success);
            }
            sayln!(
                "{}: valid ({} enabled, {} disabled)",
                origin_of(&c.config),
                portmap::counted(model.mappings.len(), "mapping"),
                model.disabled.len()
            )?;
            Ok(ExitStatus::Success)
        }
        Command::Render(c) => {
            let model = load(&c.config)?;
            say(&kind.render(&model, &cli.table, &netns_of(cli))?)?;
            Ok(ExitStatus::Success)
        }
        Command::Plan {
            config,
            json,
            detailed_exitcode,
            out: out_file,
        } => {
            let model = load(&config.config)?;
            let mut backend = open(cli, kind)?;
            let plan = portmap::plan_owned(model, &backend.observe()?);
            if let Some(path) = out_file {
                let text = serde_json::to_string_pretty(&plan)?;
                std::fs::write(path, text + "\n")
                    .with_context(|| format!("cannot write plan file {}", shown_path(path)))?;
            }
            if *json {
                cli_json::emit(&portmap::json::plan_document("plan", &plan))?;
            } else {
                print_plan(&plan, color)?;
                if let Some(path) = out_file {
                    let path = shown_path(path);
                    sayln!("\nSaved the plan to {path}; apply it with `portmap apply {path}`.")?;
                }
            }
            Ok(if *detailed_exitcode && !plan.is_empty() {
                ExitStatus::Changes
            } else {
                ExitStatus::Success
            })
        }
        Command::Show { planfile, json } => {
            let plan = read_plan(planfile)?;
            if *json {
                cli_json::emit(&portmap::json::plan_document("show", &plan))?;
            } else {
                sayln!("Saved plan {}:\n", shown_path(planfile))?;
                print_plan(&plan, color)?;
            }
            Ok(ExitStatus::Success)
        }
        Command::Apply {
            config,
            planfile,
            auto_approve,
            keep_conntrack,
            confirm: confirm_seconds,
            verify,
            json,
        } => {
            let json = *json;
            if json && planfile.is_none() && !*auto_approve {
                return Err(cli_json::Usage(
                    "apply --json needs --auto-approve (or a saved PLANFILE): a program reading JSON cannot answer the question",
                )
                .into());
            }
            let mut attempts = 1;
            let options = portmap::ApplyOptions::keep_conntrack(*keep_conntrack).verify((*verify).into());
            let mut started = Instant::now();
            let mut guard = None;
            let (plan, report) = if let Some(path) = planfile {
                let plan = read_plan(path)?;
                let mut backend = open(cli, kind)?;
                if plan.is_empty() {
                    if json {
                        cli_json::emit(&portmap::json::apply_document(
                            &plan,
                            &portmap::json::Applied::default(),
                        ))?;
                    } else {
                        print_plan(&plan, color)?;
                    }
                    return Ok(ExitStatus::Success);
                }
                if !json {
                    print_plan(&plan, color)?;
                }
                // A saved plan is the approval (as with terraform).
                let _lock = cli_confirm::lock(cli, kind)?;
                let report = backend.apply_saved(&plan, &options)?;
                (plan, report)
            } else {
                let path = config
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/etc/portmap/portmap.yaml"));
                let model = load(&path)?;
                let mut backend = open(cli, kind)?;
                // Writers take turns; the plan is made once the lock is ours.
                let lock = cli_confirm::lock(cli, kind)?;
                if let Some(seconds) = confirm_seconds {
                    guard = Some(cli_confirm::Guard::new(cli, kind, *seconds, backend.name())?);
                }
                // A fresh plan is shown and confirmed; when another program changes the ruleset
                // before the transaction, portmap plans again and asks again only if the changes
                // differ from what was approved.
                let mut refusal = None;
                let approve = |plan: &Plan, attempt: usize| {
                    if json {
                        started = Instant::now();
                        return true;
                    }
                    let shown = if attempt > 1 {
                        sayln!("\nAnother program changed the ruleset in the meantime; planned again:\n")
                    } else {
                        Ok(())
                    };
                    if let Err(e) = shown.and_then(|()| print_plan(plan, color)) {
                        refusal = Some(e);
                        return false;
                    }
                    if !*auto_approve
                        && let Err(e) = confirm(&format!("Apply these changes to table {}?", plan.table))
                    {
                        refusal = Some(e);
                        return false;
                    }
                    started = Instant::now();
                    true
                };
                // The plan takes the model: a large configuration is held once.
                let outcome = match guard.as_mut() {
                    Some(g) => backend.converge_owned(model, &options, approve, |plan, observed| {
                        g.prepare(&lock, plan, observed)
                    }),
                    None => backend.converge_owned(model, &options, approve, |_, _| Ok(())),
                };
                if outcome.is_err()
                    && let Some(g) = &guard
                {
                    g.failed(&lock);
                }
                drop(lock);
                match outcome {
                    Ok(o) if o.plan.is_empty() => {
                        if json {
                            let applied = portmap::json::Applied::new(&o.report, o.attempts, 0.0);
                            let mut doc = portmap::json::apply_document(&o.plan, &applied);
                            if confirm_seconds.is_some() {
                                // Nothing changed, so nothing waits for confirmation.
                                doc["confirm"] = serde_json::Value::Null;
                            }
                            cli_json::emit(&doc)?;
                            return Ok(ExitStatus::Success);
                        }
                        print_plan(&o.plan, color)?;
                        return match guard {
                            Some(g) => g.armed(cli, kind),
                            None => Ok(ExitStatus::Success),
                        };
                    }
                    Ok(o) => {
                        attempts = o.attempts;
                        (o.plan, o.report)
                    }
                    Err(portmap::Error::Declined) => {
                        return Err(
                            refusal.unwrap_or_else(|| anyhow::anyhow!("cancelled; nothing was changed"))
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let elapsed = started.elapsed();
            if json {
                let applied = portmap::json::Applied::new(&report, attempts, elapsed.as_secs_f64() * 1000.0);
                let mut doc = portmap::json::apply_document(&plan, &applied);
                if confirm_seconds.is_some() {
                    doc["confirm"] = guard
                        .as_ref()
                        .map_or(serde_json::Value::Null, cli_confirm::Guard::json);
                }
                cli_json::emit(&doc)?;
                cli_confirm::note_pending(cli, kind);
                return Ok(ExitStatus::Success);
            }
            let portmap::Counts {
                create,
                update,
                repair,
                delete,
            } = plan.counts();
            // nft commits one transaction; iptables-restore commits each table on its own.
            let how = if matches!(kind, BackendKind::Nft) {
                format!(
                    "in one transaction ({}",
                    portmap::counted(report.messages, "message")
                )
            } else {
                format!(
                    "with iptables-restore, one commit per table ({}",
                    portmap::counted(report.messages, "line")
                )
            };
            sayln!(
                "\nApply complete: {create} created, {update} changed, {delete} deleted{}{} — {} {how}, {:.1} ms){}.",
                if repair > 0 {
                    format!(", {repair} repaired")
                } else {
                    String::new()
                },
                if report.rebuilt { ", table rebuilt" } else { "" },
                portmap::counted(report.objects, "kernel object"),
                elapsed.as_secs_f64() * 1000.0,
                match report.flows_cleared {
                    0 => String::new(),
                    1 => "; 1 stale tracked connection removed".to_owned(),
                    n => format!("; {n} stale tracked connections removed"),
                }
            )?;
            if let Some(g) = guard {
                return g.armed(cli, kind);
            }
            cli_confirm::note_pending(cli, kind);
            Ok(ExitStatus::Success)
        }
        Command::Completions { shell } => cli_docs::completions(*shell, Cli::command()),
        Command::Man { dir } => cli_docs::man(Cli::command(), dir.as_deref()),
        Command::Schema => {
            sayln!("{}", serde_json::to_string_pretty(&portmap::config_schema())?)?;
            Ok(ExitStatus::Success)
        }
        Command::Confirm { json } => cli_confirm::confirm(cli, kind, *json),
        Command::Rollback { json } => cli_confirm::rollback(cli, kind, *json),
        Command::ConfirmWatchdog { id } => cli_confirm::watchdog(cli, kind, id),
        Command::Metrics { config } => {
            let model = config.as_deref().map(load).transpose()?;
            say(&portmap::metrics::gather(
                kind,
                &netns_of(cli),
                &cli.table,
                model.as_ref(),
            ))?;
            Ok(ExitStatus::Success)
        }
        Command::Log {
            config,
            group,
            count,
            json,
        } => {
            let group = match (group, config) {
                (Some(g), _) => *g,
                (None, Some(path)) => log_group_of(&load(path)?),
                (None, None) => portmap::DEFAULT_LOG_GROUP,
            };
            let mut log = portmap::connlog::ConnectionLog::open(&netns_of(cli), group)?;
            tell(&format!("reading new connections from nflog group {group}\n"));
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                let Some(event) = log.next_event(None)? else {
                    continue;
                };
                seen += 1;
                if *json {
                    let public = event.public.map(|p| p.to_string());
                    sayln!(
                        "{}",
                        serde_json::json!({
                            "mapping": event.mapping,
                            "protocol": event.protocol,
                            "source": event.source.to_string(),
                            "target": event.target.to_string(),
                            "public": public,
                        })
                    )?;
                } else {
                    sayln!("{event}")?;
                }
                if STDOUT_CLOSED.load(Ordering::Relaxed) {
                    break;
                }
            }
            Ok(ExitStatus::Success)
        }
        Command::Status { json } => {
            let mut backend = open(cli, kind)?;
            let observed = backend.status()?;
            let (confirm_text, confirm_json) = cli_confirm::status(cli, kind)?;
            if *json {
                let mut value = portmap::json::status_document(&observed);
                value["confirm"] = confirm_json;
                cli_json::emit(&value)?;
            } else {
                say(&portmap::render_status(&observed, color))?;
                say(&confirm_text)?;
            }
            Ok(ExitStatus::Success)
        }
        Command::Watch {
            config,
            interval,
            own,
            event_buffer,
            metrics,
        } => {
            if config.config == Path::new("-") {
                bail!(
                    "watch reads its configuration again on SIGHUP, so it needs a file, not standard input"
                );
            }
            let path = config.config.clone();
            let loader = Box::new(move || load(&path).map_err(|e| format!("{e:#}")));
            let mut options = portmap::WatchOptions::default();
            options.interval = *interval;
            options.own = *own;
            options.event_buffer = event_buffer.map(|b| b as usize);
            options.lock_timeout = cli.lock_timeout;
            // Whether any mapping logs its connections, and to which group, as the file says now.
            let log_group = load(&config.config)
                .ok()
                .filter(|m| m.mappings.iter().any(|m| m.log.is_some()))
                .map(|m| log_group_of(&m));
            let netns = netns_of(cli);
            let watch = portmap::Watch::new(kind, &netns, &cli.table, loader, options)?;
            let handle = watch.handle();
            let _signals = portmap::watch::forward_signals(&handle)?;
            let _log = match log_group {
                Some(group) => Some(portmap::watch::log_connections(&handle, &netns, group)?),
                None => None,
            };
            let _metrics = match metrics {
                Some(addr) => {
                    let gatherer = portmap::metrics::Gatherer::new(kind, netns.clone(), cli.table.clone());
                    let status = handle.clone();
                    let server = portmap::metrics::serve(addr, move || {
                        gatherer.gather() + &portmap::metrics::encode_watch(&status.status())
                    })
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                    handle.log(
                        portmap::watch::Level::Info,
                        &format!("serving metrics on http://{}/metrics", server.addr()),
                    );
                    Some(server)
                }
                None => None,
            };
            watch.run()?;
            Ok(ExitStatus::Success)
        }
        Command::Import { from, output, wan } => {
            let from = match from {
                ImportFrom::Nft => portmap::import::ReadFrom::Nft,
                ImportFrom::Iptables => portmap::import::ReadFrom::Iptables,
                ImportFrom::All => portmap::import::ReadFrom::All,
            };
            let mut options = portmap::import::ImportOptions::new(from);
            options.wan.clone_from(wan);
            let imported = portmap::import::import(&netns_of(cli), &options)?;
            let yaml = imported.to_yaml();
            match output {
                Some(path) => std::fs::write(path, &yaml)
                    .with_context(|| format!("cannot write {}", shown_path(path)))?,
                None => say(&yaml)?,
            }
            tell(&format!("{}\n", imported.summary()));
            Ok(ExitStatus::Success)
        }
        Command::Explain {
            protocol,
            port,
            from,
            to,
            json,
        } => {
            let transport = match protocol {
                ProtocolArg::Tcp => portmap::Transport::Tcp,
                ProtocolArg::Udp => portmap::Transport::Udp,
            };
            let query =
                portmap::explain::Query::new(transport, *port, *from, *to).map_err(cli_json::BadArgument)?;
            let explanation = portmap::explain::explain(kind, &netns_of(cli), &cli.table, &query)?;
            if *json {
                cli_json::emit(&explanation.to_json())?;
            } else {
                say(&explanation.to_string())?;
            }
            Ok(if explanation.forwarded() {
                ExitStatus::Success
            } else {
                ExitStatus::Error
            })
        }
        Command::Destroy {
            auto_approve,
            keep_conntrack,
            json,
        } => {
            if *json && !*auto_approve {
                return Err(cli_json::Usage(
                    "destroy --json needs --auto-approve: a program reading JSON cannot answer the question",
                )
                .into());
            }
            let mut backend = open(cli, kind)?;
            let _lock = cli_confirm::lock(cli, kind)?;
            let observed = backend.observe()?;
            if *json {
                let options = portmap::ApplyOptions::keep_conntrack(*keep_conntrack);
                let names: Vec<String> = observed.mappings.iter().map(|m| m.name.clone()).collect();
                let removed = if observed.state == portmap::TableState::Missing {
                    None
                } else {
                    backend.destroy(&options)?
                };
                let removed = removed.map(|d| (names.as_slice(), d.flows_cleared));
                cli_json::emit(&portmap::json::destroy_document(
                    backend.name(),
                    &observed.table,
                    removed,
                ))?;
                cli_confirm::note_pending(cli, kind);
                return Ok(ExitStatus::Success);
            }
            if observed.state == portmap::TableState::Missing {
                sayln!("Nothing to destroy: table {} does not exist.", observed.table)?;
                return Ok(ExitStatus::Success);
            }
            sayln!(
                "portmap will delete table {} with its {}; other tables are not touched.",
                observed.table,
                portmap::counted(observed.mappings.len(), "mapping")
            )?;
            if !*auto_approve {
                confirm(&format!("Destroy table {}?", observed.table))?;
            }
            let options = portmap::ApplyOptions::keep_conntrack(*keep_conntrack);
            match backend.destroy(&options)? {
                None => sayln!("Nothing to destroy: table {} was already gone.", observed.table)?,
                Some(d) if d.flows_cleared > 0 => sayln!(
                    "Destroyed table {}; {} of its mappings removed.",
                    observed.table,
                    if d.flows_cleared == 1 {
                        "1 tracked connection".to_owned()
                    } else {
                        format!("{} tracked connections", d.flows_cleared)
                    }
                )?,
                Some(_) => sayln!("Destroyed table {}.", observed.table)?,
            }
            cli_confirm::note_pending(cli, kind);
            Ok(ExitStatus::Success)
        }
    }
}

/// `--interval`: seconds, more than 0 and at most an hour (`0.5`, `2`).
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{}` is not a number of seconds", shown_arg(text)))?;
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!(
            "{} is out of range: give more than 0 and at most 3600 seconds",
            shown_arg(text)
        ));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// `--confirm SECONDS`: a whole number of seconds in the range `apply --confirm` accepts.
fn parse_confirm_seconds(text: &str) -> Result<u64, String> {
    let max = portmap::confirm::MAX_CONFIRM_SECONDS;
    match text.trim().parse::<u64>() {
        Ok(seconds) if (1..=max).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "`{}` is not a number of seconds from 1 to {max}: give how long portmap waits for `portmap confirm` before it rolls the change back, e.g. --confirm 60",
            shown_arg(text)
        )),
    }
}

/// `--metrics ADDR:PORT`: an IP address (IPv6 in brackets) and a port.
fn parse_metrics_address(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "`{}` is not an address and port: give ADDR:PORT, e.g. 127.0.0.1:9300 or [::1]:9300",
            shown_arg(text)
        )
    })
}

/// The nflog group the configuration's logging mappings use (its `log_group`).
fn log_group_of(model: &Model) -> u16 {
    model
        .mappings
        .iter()
        .find_map(|m| m.log)
        .unwrap_or(portmap::DEFAULT_LOG_GROUP)
}

/// Record an apply's outcome under /run/portmap for `portmap metrics`.
fn record_apply(cli: &Cli, result: &Result<ExitStatus>) {
    let record = match result {
        Ok(_) => portmap::metrics::ApplyRecord::now(true, None),
        Err(e) => portmap::metrics::ApplyRecord::now(false, Some(format!("{e:#}"))),
    };
    portmap::metrics::record_apply_of(backend_kind(cli), &netns_of(cli), &cli.table, &record);
}

fn backend_kind(cli: &Cli) -> BackendKind {
    match cli.backend {
        BackendArg::Nft => BackendKind::Nft,
        BackendArg::Iptables => BackendKind::Iptables(portmap::IptablesVariant::System),
        BackendArg::IptablesLegacy => BackendKind::Iptables(portmap::IptablesVariant::Legacy),
        BackendArg::IptablesNft => BackendKind::Iptables(portmap::IptablesVariant::Nft),
    }
}

fn netns_of(cli: &Cli) -> Netns {
    cli.netns.as_deref().map_or(Netns::Current, Netns::from_arg)
}

fn open(cli: &Cli, kind: BackendKind) -> Result<Session<Backends>> {
    Ok(Session::open_with_memo(
        kind,
        &netns_of(cli),
        &cli.table,
        &portmap::RunDir::from_env(),
    )?)
}

/// Read and validate a configuration; `-` is standard input.
fn load(path: &Path) -> Result<Model> {
    let started = Instant::now();
    let bytes = read_limited(path, "configuration", MAX_CONFIG_BYTES)?;
    let origin = origin_of(path);
    let size = bytes.len();
    // The bytes are dropped once read, before the checks.
    match portmap::load_vec(bytes, &origin) {
        Ok(model) => {
            tracing::info!(
                file = %origin,
                bytes = size,
                mappings = model.mappings.len(),
                disabled = model.disabled.len(),
                elapsed = ?started.elapsed(),
                "read the configuration"
            );
            Ok(model)
        }
        Err(errors) => Err(cli_json::InvalidConfig { origin, errors }.into()),
    }
}

/// Read and check a plan saved by `plan --out`.
fn read_plan(path: &Path) -> Result<Plan> {
    let bytes = read_limited(path, "plan file", MAX_PLAN_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a portmap plan: it is not UTF-8 text", shown_path(path)))?;
    Plan::from_json(&text).map_err(|e| cli_hints::not_a_plan(path, &text, e))
}

/// The whole of `path` (`-`: standard input), read with one bound for files, pipes, FIFOs and
/// devices alike: at most `limit` + 1 bytes are ever read, so `/dev/zero` or an endless pipe is
/// refused at the limit instead of filling memory.
fn read_limited(path: &Path, what: &str, limit: usize) -> Result<Vec<u8>> {
    let name = if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        shown_path(path)
    };
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(cap)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
    } else {
        let mut file = File::open(path).with_context(|| format!("cannot read {what} file {name}"))?;
        // A regular file says its size: refuse a large one without reading it.
        let size = file
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len());
        if let Some(size) = size {
            if size >= cap {
                bail!(
                    "{name} is {}, larger than the {} portmap reads for a {what}",
                    shown_size(usize::try_from(size).unwrap_or(usize::MAX)),
                    shown_size(limit)
                );
            }
            bytes.reserve_exact(usize::try_from(size).unwrap_or(0));
        }
        (&mut file)
            .take(cap)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {what} file {name}"))?;
    }
    if bytes.len() > limit {
        bail!(
            "{name} is larger than the {} portmap reads for a {what}; reading stopped there",
            shown_size(limit)
        );
    }
    Ok(bytes)
}

/// How a configuration's origin is named in messages: `<stdin>` for `-`, else the path as given,
/// escaped.
fn origin_of(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        portmap::shown_origin(&path.to_string_lossy())
    }
}

/// A path for a one-line message: escaped and cut short.
fn shown_path(path: &Path) -> String {
    shown_arg(&path.to_string_lossy())
}

/// Ask on the terminal; refuse when there is none.
fn confirm(question: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "refusing to change the kernel without confirmation: there is no terminal to ask on; pass --auto-approve"
        );
    }
    say(&format!("\n{question} Only 'yes' will be accepted: "))?;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        bail!("standard output is closed, so the question cannot be asked; nothing was changed");
    }
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("cancelled; nothing was changed");
    }
    Ok(())
}

/// The plan on standard output, its warnings on standard error.
fn print_plan(plan: &Plan, color: bool) -> Result<()> {
    say(&portmap::render_plan(plan, color))?;
    let warnings = portmap::render_warnings(plan, use_color(&std::io::stderr()));
    if !warnings.is_empty() {
        cli_log::notice(&warnings);
    }
    Ok(())
}

fn use_color(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
