//! portmap-iptables: the iptables backend, for both variants (legacy and nft). portmap's rules live
//! in its own chains (`PORTMAP-…`, see [`layout`]) jumped to from the built-in chains; they are
//! written with `iptables-restore --noflush` / `ip6tables-restore --noflush` fed on stdin (never a
//! shell), read back with `iptables-save` / `ip6tables-save`, and dispatched through a tree of
//! chains keyed on the port ([`tree`]), so a packet evaluates O(log N) rules.
//!
//! It never writes a chain it did not create (a chain of the prefix in a table without portmap's
//! marker is refused), never changes another tool's rule, and leaves every other chain
//! byte-identical: only chains it names are flushed (`--noflush`), and its jumps are found by their
//! comment.
//!
//! ```no_run
//! use portmap_iptables::{IptablesBackend, Variant, DEFAULT_PREFIX};
//! use portmap_core::{Backend, Netns};
//!
//! let mut backend = IptablesBackend::open(Variant::System, &Netns::Current, DEFAULT_PREFIX)?;
//! let observed = backend.observe()?;
//! println!("{} mappings in {}", observed.mappings.len(), backend.name());
//! # Ok::<(), portmap_iptables::Error>(())
//! ```

#![warn(missing_docs)]

pub mod coexistence;
pub mod commit;
pub mod layout;
pub mod observe;
pub mod render;
pub mod save;
#[cfg(test)]
mod tests;
pub mod tree;
pub mod variant;

use std::collections::BTreeMap;
use std::time::Duration;

use portmap_core::{ApplyReport, Backend, Environment, Model, Netns, Observed, Place, Plan, StaleFlows};
use portmap_netlink::conntrack::{self, Conntrack, Flow};

pub use layout::{DEFAULT_PREFIX, Family, LanSide, Prefix, Table};
pub use variant::Variant;

/// How long `iptables-restore` (legacy) waits for the xtables lock, by default (`-w 5`, as
/// kube-proxy).
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Exit status of `iptables-restore` for a resource problem, such as the lock not being had.
const EXIT_RESOURCE: i32 = 4;

/// Errors of the iptables backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program portmap needs is not installed.
    #[error("{program} is not installed (Debian: apt-get install iptables)")]
    NotInstalled {
        /// The program, e.g. `iptables-legacy-restore`.
        program: String,
    },
    /// `iptables -V` named no variant portmap knows.
    #[error(
        "cannot tell which iptables the system uses: `iptables -V` printed `{version}`; choose one with --backend iptables-legacy or iptables-nft"
    )]
    UnknownVariant {
        /// What `iptables -V` printed (escaped).
        version: String,
    },
    /// A chain prefix that is not one.
    #[error(
        "chain prefix `{0}` is not valid: use 1-12 characters from A-Z a-z 0-9 _ starting with a letter (chains are named PREFIX-…, at most 28 characters)"
    )]
    BadPrefix(String),
    /// A limit iptables' hashlimit cannot keep exactly.
    #[error(
        "mapping {mapping}: limit {limit} cannot be kept exactly by iptables' hashlimit, which counts the time between connections in whole microseconds (it would keep {kept}); choose a rate that divides evenly, e.g. one per second, minute or hour, or use the nft backend"
    )]
    InexactLimit {
        /// The mapping.
        mapping: String,
        /// The limit configured.
        limit: String,
        /// What iptables would keep.
        kept: String,
    },
    /// An interface name iptables would read as something else.
    #[error(
        "interface name `{0}` cannot be used with iptables: use A-Z a-z 0-9 _ . - (a `+` is an iptables wildcard)"
    )]
    BadInterface(String),
    /// A namespace name that could leave `/run/netns`.
    #[error("network namespace name `{0}` is not valid")]
    BadNetns(String),
    /// The namespace file cannot be opened.
    #[error("cannot open network namespace {netns}: {source}")]
    Netns {
        /// The namespace.
        netns: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `iptables-save` failed.
    #[error("{program} failed ({}): {stderr}", exit_text(*.code))]
    Save {
        /// The program.
        program: String,
        /// Its exit status.
        code: Option<i32>,
        /// What it said.
        stderr: String,
    },
    /// A program was refused the kernel's rules for lack of privileges.
    #[error("{program}: permission denied; needs CAP_NET_ADMIN (run as root)")]
    PermissionDenied {
        /// The program.
        program: String,
    },
    /// `iptables-save` printed what portmap cannot read.
    #[error("cannot read the output of {program}, line {line}: {what}")]
    Parse {
        /// The program.
        program: String,
        /// The line.
        line: usize,
        /// What was wrong.
        what: String,
    },
    /// An `iptables-restore` commit was refused; the commits before it landed.
    #[error(
        "{program} refused the {phase} commit of table {table} ({}): {stderr}; {landed} — the state in between is safe, and `portmap apply` again repairs it",
        exit_text(*.code)
    )]
    Restore {
        /// The program.
        program: String,
        /// The table.
        table: Table,
        /// Which commit (`widen`, `nat`, `narrow`, …).
        phase: &'static str,
        /// Exit status.
        code: Option<i32>,
        /// What it said.
        stderr: String,
        /// Which commits landed before it.
        landed: String,
    },
    /// The xtables lock was held by another program for longer than portmap waits.
    #[error(
        "another program held the xtables lock for more than {waited_secs} s, so {program} gave up; nothing of the {phase} commit of table {table} was applied ({landed}) — find the program holding {lock} (iptables, firewalld, kube-proxy, docker) and run portmap again"
    )]
    Lock {
        /// The program.
        program: String,
        /// How long it waited.
        waited_secs: u64,
        /// The lock file.
        lock: String,
        /// The table.
        table: Table,
        /// Which commit.
        phase: &'static str,
        /// Which commits landed before it.
        landed: String,
    },
    /// Chains of portmap's prefix exist in a table without portmap's marker.
    #[error(
        "{tool} table {table} holds chains named {prefix}-… that portmap did not create (no chain {prefix}-MARK starting with the comment \"managed by portmap\"); portmap never changes or deletes chains it did not create — give portmap a prefix of its own with --table NAME"
    )]
    Foreign {
        /// `iptables` or `ip6tables`.
        tool: &'static str,
        /// The table.
        table: Table,
        /// The prefix.
        prefix: String,
    },
    /// The configuration has IPv6 mappings, but IPv6 rules cannot be read or written here.
    #[error(
        "the configuration has IPv6 mappings ({mappings}), but {why}; portmap reads and writes IPv4 rules only here and applied nothing — make ip6tables work (or IPv6 available) in this namespace, or remove the IPv6 mappings"
    )]
    Ipv6Unavailable {
        /// Why (which program failed, and what it said).
        why: String,
        /// The IPv6 mappings, by name.
        mappings: String,
    },
    /// The plan is not for this backend, prefix or place, has no generation, or is stale.
    #[error(transparent)]
    Refused(#[from] portmap_core::Refusal),
    /// Reading interfaces, sysctls, the boot id or conntrack failed.
    #[error(transparent)]
    Netlink(#[from] portmap_netlink::Error),
}

/// `exit 4`, or `killed by a signal` for a program that did not exit.
fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"))
}

/// The iptables backend bound to one network namespace, one variant and one chain prefix.
#[derive(Debug)]
pub struct IptablesBackend {
    variant: Variant,
    netns: Netns,
    prefix: Prefix,
    place: Place,
    lock_wait: Duration,
    env: Vec<(String, String)>,
    fail_commit: Option<(Family, Table)>,
}

/// What `iptables-save` printed for both families (IPv4 only when IPv6 cannot be read), parsed,
/// and the hash of what is not portmap's.
struct Snapshot {
    dumps: Vec<(Family, save::Dump)>,
    foreign: u32,
    /// Why IPv6 could not be read: portmap then observes and writes IPv4 only.
    ipv6_unavailable: Option<String>,
}

/// The chain prefix for a `--table` value: `portmap` (the nft default) means `PORTMAP`; anything
/// else is taken as it is, checked.
pub fn checked_prefix(name: &str) -> Result<Prefix, Error> {
    let name = if name == "portmap" { DEFAULT_PREFIX } else { name };
    Prefix::new(name).ok_or_else(|| Error::BadPrefix(portmap_core::shown_arg(name)))
}

fn netlink_netns(netns: &Netns) -> portmap_netlink::Netns {
    match netns {
        Netns::Named(name) => portmap_netlink::Netns::Named(name.clone()),
        Netns::Path(path) => portmap_netlink::Netns::Path(path.clone()),
        _ => portmap_netlink::Netns::Current,
    }
}

/// Render `model` as `iptables-restore` input for chain prefix `prefix` (see [`render`]). The
/// router's LAN-side addresses are read from `netns`.
pub fn render_script(model: &Model, prefix: &str, netns: &Netns) -> Result<String, Error> {
    let p = checked_prefix(prefix)?;
    check_interfaces(&model.settings)?;
    check_limits(model)?;
    let lan = lan_side(netns, &model.settings.lan_interfaces)?;
    Ok(render::render(&p, model, &lan))
}

fn lan_side(netns: &Netns, lan: &[String]) -> Result<LanSide, Error> {
    if lan.is_empty() {
        return Ok(LanSide::default());
    }
    let interfaces = portmap_netlink::interfaces(&netlink_netns(netns))?;
    Ok(LanSide::from_interfaces(&interfaces, lan))
}

fn check_interfaces(settings: &portmap_core::Settings) -> Result<(), Error> {
    match settings
        .wan_interfaces
        .iter()
        .chain(&settings.lan_interfaces)
        .find(|i| !layout::is_plain_interface(i))
    {
        Some(bad) => Err(Error::BadInterface(portmap_core::shown_arg(bad))),
        None => Ok(()),
    }
}

/// Refuse a `limit` that iptables' hashlimit would not keep exactly (it counts the period
/// between connections in whole microseconds).
fn check_limits(model: &Model) -> Result<(), Error> {
    for m in &model.mappings {
        if let Some(limit) = &m.limit
            && !layout::hashlimit_is_exact(limit)
        {
            let (rate, unit) = layout::hashlimit_rate(limit);
            return Err(Error::InexactLimit {
                mapping: m.name.clone(),
                limit: limit.to_string(),
                kept: format!("{rate}/{unit}"),
            });
        }
    }
    Ok(())
}

/// A conntrack entry as the core reads it.
fn tracked(flow: &Flow) -> portmap_core::TrackedFlow {
    portmap_core::TrackedFlow {
        dnat: flow.status & conntrack::status::DST_NAT != 0,
        proto: flow.original.proto,
        src: flow.original.src,
        dst_port: flow.original.dst_port,
        reply_src: flow.reply.src,
        reply_src_port: flow.reply.src_port,
    }
}

/// Whether `flow` was DNAT-ed through the forward `stale` names (see [`StaleFlows::covers`]).
fn flow_is_stale(flow: &Flow, stale: &StaleFlows) -> bool {
    stale.covers(&tracked(flow))
}

impl IptablesBackend {
    /// Open the backend for `variant` (resolving [`Variant::System`] with `iptables -V` run in
    /// `netns`) managing chains `PREFIX-…` (`portmap`, the nft default table name, means
    /// `PORTMAP`).
    pub fn open(variant: Variant, netns: &Netns, table_or_prefix: &str) -> Result<Self, Error> {
        let prefix = checked_prefix(table_or_prefix)?;
        let variant = variant.resolve(netns)?;
        // IPv4 is required; without the IPv6 programs portmap works with IPv4 only (see
        // `snapshot`).
        variant.program(Family::V4, "restore")?;
        variant.program(Family::V4, "save")?;
        let nl = netlink_netns(netns);
        let place = Place {
            boot_id: portmap_netlink::boot_id()?,
            netns: portmap_netlink::netns_inode(&nl)?,
        };
        Ok(IptablesBackend {
            variant,
            netns: netns.clone(),
            prefix,
            place,
            lock_wait: LOCK_WAIT,
            env: Vec::new(),
            fail_commit: None,
        })
    }

    /// The variant driven (never [`Variant::System`]).
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The chain prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// How long a legacy commit waits for the xtables lock (`-w`); at least one second.
    pub fn set_lock_wait(&mut self, wait: Duration) {
        self.lock_wait = wait.max(Duration::from_secs(1));
    }

    /// Use another xtables lock file (`XTABLES_LOCKFILE`), for tests that must not hold the
    /// host's `/run/xtables.lock`.
    pub fn set_lock_file(&mut self, path: &std::path::Path) {
        self.env.retain(|(k, _)| k != "XTABLES_LOCKFILE");
        self.env
            .push(("XTABLES_LOCKFILE".to_owned(), path.display().to_string()));
    }

    /// Fault injection, for tests only: make every later commit of `table` for `family` fail, or
    /// none with `None`. A rule jumping to a chain that does not exist is added to that commit, so
    /// `iptables-restore` itself refuses it and none of it lands, while the commits before it
    /// stay: what a real failure there (the kernel refusing a rule, the process killed) leaves
    /// behind, which docs/iptables.md ("What is atomic") says is safe and the next apply repairs.
    /// Nothing in portmap calls this, and the CLI has no way to reach it; it is set on a backend
    /// value a test opened itself.
    pub fn fail_commit(&mut self, at: Option<(Family, Table)>) {
        self.fail_commit = at;
    }

    fn save(&self, family: Family, variant: Variant) -> Result<String, Error> {
        let program = variant.program(family, "save")?;
        // With the rules' counters: what each mapping counted, and what a rewritten chain keeps.
        let out = variant::run_with_env(&program, &["-c"], None, &self.netns, &self.env)?;
        if out.code != Some(0) && out.stderr.contains("Permission denied") {
            return Err(Error::PermissionDenied {
                program: program.display().to_string(),
            });
        }
        if out.code != Some(0) {
            return Err(Error::Save {
                program: program.display().to_string(),
                code: out.code,
                stderr: out.stderr.trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    fn parse(family: Family, text: &str) -> Result<save::Dump, Error> {
        save::parse(text).map_err(|e| Error::Parse {
            program: format!("{}-save", family.tool()),
            line: e.line,
            what: e.what,
        })
    }

    fn snapshot(&self) -> Result<Snapshot, Error> {
        let v4 = self.save(Family::V4, self.variant)?;
        let mut dumps = vec![(Family::V4, Self::parse(Family::V4, &v4)?)];
        let ipv6_unavailable = match self.ipv6_save() {
            Ok(v6) => {
                dumps.push((Family::V6, Self::parse(Family::V6, &v6)?));
                None
            }
            Err(why) => {
                tracing::info!("{why}: reading and writing IPv4 rules only");
                Some(why)
            }
        };
        let all: Vec<&save::Dump> = dumps.iter().map(|(_, d)| d).collect();
        Ok(Snapshot {
            foreign: save::foreign_hash(&self.prefix, &all),
            dumps,
            ipv6_unavailable,
        })
    }

    /// The counters of portmap's rules in `snap`, by family, table and chain.
    fn counts(&self, snap: &Snapshot) -> observe::Counts {
        let mut out = observe::Counts::new();
        for (family, dump) in &snap.dumps {
            for table in Table::ALL {
                let t = dump.table(table);
                let ours: BTreeMap<String, Vec<(u64, u64)>> = t
                    .counters
                    .iter()
                    .filter(|(chain, _)| self.prefix.owns_name(chain))
                    .map(|(chain, c)| (chain.clone(), c.clone()))
                    .collect();
                out.insert((*family, table), ours);
            }
        }
        out
    }

    /// `ip6tables-save` of the variant, or why IPv6 rules cannot be read or written here: the
    /// kernel has no IPv6 (booted with `ipv6.disable=1`: no `net.ipv6` sysctls, and
    /// `ip6tables-restore` cannot create a table), the program is missing, or it fails (e.g.
    /// `ip6tables-nft-save` on an `ip6` table holding rules it cannot translate).
    fn ipv6_save(&self) -> Result<String, String> {
        let nl = netlink_netns(&self.netns);
        if let Err(portmap_netlink::Error::NotFound { .. }) =
            portmap_netlink::sysctl::read(&nl, "net.ipv6.conf.all.disable_ipv6")
        {
            return Err(format!(
                "the kernel has no IPv6 in network namespace {} (no net.ipv6 sysctls: booted with ipv6.disable=1?)",
                self.netns
            ));
        }
        match self.save(Family::V6, self.variant) {
            Ok(text) => Ok(text),
            Err(Error::Save {
                program,
                code,
                stderr,
            }) => {
                // What the tool said, on one line and bounded (it can be long).
                let said: Vec<&str> = stderr
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .take(3)
                    .collect();
                let said: String = said.join("; ").chars().take(240).collect();
                let name = std::path::Path::new(&program)
                    .file_name()
                    .map_or(program.clone(), |n| n.to_string_lossy().into_owned());
                Err(format!(
                    "{name} failed ({}): {}",
                    exit_text(code),
                    portmap_core::shown_origin(&said)
                ))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn owned(&self, snap: &Snapshot) -> Result<BTreeMap<(Family, Table), layout::Chains>, Error> {
        let dumps: Vec<(Family, &save::Dump)> = snap.dumps.iter().map(|(f, d)| (*f, d)).collect();
        observe::owned(&self.prefix, &dumps).map_err(|f| Error::Foreign {
            tool: f.family.tool(),
            table: f.table,
            prefix: self.prefix.to_string(),
        })
    }

    /// Run one commit. Says when it has to wait for the xtables lock, and fails clearly when the
    /// wait times out.
    fn run_step(&self, step: &commit::Step, landed: &[String]) -> Result<(), Error> {
        let program = self.variant.program(step.family, "restore")?;
        let wait = self.lock_wait.as_secs().to_string();
        let mut args: Vec<&str> = Vec::new();
        if self.variant == Variant::Legacy {
            args.extend(["-w", wait.as_str()]);
        }
        args.push("--noflush");
        args.push("--counters");
        let lock = variant::lock_path(&self.env);
        if self.variant == Variant::Legacy && variant::lock_is_held(&lock) {
            tracing::warn!(
                "another program holds the xtables lock ({}); waiting up to {} s for it",
                lock.display(),
                self.lock_wait.as_secs()
            );
        }
        let mut script = step.script.clone();
        if self.fail_commit == Some((step.family, step.table)) {
            let bad = format!("-A {} -j ACCEPT\nCOMMIT\n", self.prefix.chain("NO-SUCH-CHAIN"));
            script = script.replacen("COMMIT\n", &bad, 1);
        }
        let out = variant::run_with_env(&program, &args, Some(&script), &self.netns, &self.env)?;
        let landed = if landed.is_empty() {
            "no commit before it landed".to_owned()
        } else {
            format!("landed before it: {}", landed.join(", "))
        };
        if out.code == Some(0) {
            if out.elapsed > Duration::from_secs(1) && self.variant == Variant::Legacy {
                tracing::warn!(
                    "{} took {:.1} s (waiting for the xtables lock)",
                    program.display(),
                    out.elapsed.as_secs_f64()
                );
            }
            return Ok(());
        }
        let stderr = out.stderr.trim().to_owned();
        if out.code == Some(EXIT_RESOURCE) && stderr.contains("xtables lock") {
            return Err(Error::Lock {
                program: program.display().to_string(),
                waited_secs: self.lock_wait.as_secs(),
                lock: lock.display().to_string(),
                table: step.table,
                phase: step.phase,
                landed,
            });
        }
        Err(Error::Restore {
            program: program.display().to_string(),
            table: step.table,
            phase: step.phase,
            code: out.code,
            stderr,
            landed,
        })
    }

    fn run_steps(&self, steps: &[commit::Step]) -> Result<(), Error> {
        let mut landed = Vec::new();
        for step in steps {
            tracing::debug!(
                "{} {} {}: {} lines, {} chains",
                step.family.tool(),
                step.table,
                step.phase,
                step.lines,
                step.chains
            );
            self.run_step(step, &landed)?;
            landed.push(format!("{} {} ({})", step.family.tool(), step.table, step.phase));
        }
        Ok(())
    }

    /// The commits `plan` would send now (for benchmarks and tests: lines and chains per commit).
    pub fn steps(&self, plan: &Plan, record: &[StaleFlows]) -> Result<Vec<commit::Step>, Error> {
        let snap = self.snapshot()?;
        let owned = self.owned(&snap)?;
        let current = layout::Layout { tables: owned };
        let lan = lan_side(&self.netns, &plan.desired.settings.lan_interfaces)?;
        let counts = self.counts(&snap);
        Self::steps_for(&snap, &current, &self.prefix, plan, record, &lan, &counts)
    }

    /// The commits of `plan` from `current`; only IPv4's when IPv6 cannot be read or written here,
    /// and none (an error) when the plan then has IPv6 mappings to write.
    fn steps_for(
        snap: &Snapshot,
        current: &layout::Layout,
        prefix: &Prefix,
        plan: &Plan,
        record: &[StaleFlows],
        lan: &LanSide,
        counts: &observe::Counts,
    ) -> Result<Vec<commit::Step>, Error> {
        let mut steps = commit::steps_counted(prefix, current, plan, record, lan, counts);
        if let Some(why) = &snap.ipv6_unavailable {
            let v6: Vec<&str> = plan
                .desired
                .mappings
                .iter()
                .filter(|m| m.to.is_ipv6())
                .map(|m| m.name.as_str())
                .collect();
            if !v6.is_empty() {
                return Err(Error::Ipv6Unavailable {
                    why: why.clone(),
                    mappings: v6.join(", "),
                });
            }
            steps.retain(|s| s.family == Family::V4);
        }
        Ok(steps)
    }

    /// Sentences for the iptables filter `FORWARD` chains that drop DNAT-ed connections: an
    /// unconditional drop above portmap's jump in its own variant, or the other variant's chain
    /// dropping by policy or a final drop without accepting `--ctstate DNAT` (see
    /// [`coexistence`]). Native nftables tables are not judged here (`portmap explain` evaluates
    /// their rules itself; [`Backend::observe`] adds them to its warnings).
    pub fn forward_blockers(&self) -> Result<Vec<String>, Error> {
        Ok(self.iptables_blockers(&self.snapshot()?))
    }

    fn iptables_blockers(&self, snap: &Snapshot) -> Vec<String> {
        let mut blocking = Vec::new();
        for (family, dump) in &snap.dumps {
            if let Some(s) = coexistence::own_variant(&self.prefix, *family, &dump.table(Table::Filter)) {
                blocking.push(s);
            }
            let other = self.variant.other();
            if let Ok(text) = self.save(*family, other)
                && let Ok(theirs) = save::parse(&text)
                && let Some(s) = coexistence::other_variant(other, *family, &theirs.table(Table::Filter))
            {
                blocking.push(s);
            }
        }
        blocking
    }

    fn environment(&self, snap: &Snapshot) -> Environment {
        let nl = netlink_netns(&self.netns);
        let flag = |key: &str| {
            portmap_netlink::sysctl::read(&nl, key)
                .ok()
                .map(|v| v.trim() != "0")
        };
        let mut blocking = self.iptables_blockers(snap);
        blocking.extend(coexistence::native_nft(&nl, self.variant));
        Environment {
            interfaces: portmap_netlink::interfaces(&nl)
                .ok()
                .map(|list| list.into_iter().map(|i| i.name).collect()),
            ipv4_forwarding: flag("net.ipv4.ip_forward"),
            ipv6_forwarding: flag("net.ipv6.conf.all.forwarding"),
            blocking_forward_chains: blocking,
            ipv6_unavailable: snap.ipv6_unavailable.clone(),
        }
    }
}

impl Backend for IptablesBackend {
    type Error = Error;

    fn name(&self) -> &'static str {
        self.variant.backend_name()
    }

    fn observe(&mut self) -> Result<Observed, Error> {
        let snap = self.snapshot()?;
        let owned = self.owned(&snap)?;
        let lan_ifaces = observe::recorded_settings(&self.prefix, &owned)
            .map(|s| s.lan_interfaces)
            .unwrap_or_default();
        let lan = lan_side(&self.netns, &lan_ifaces)?;
        let counts = self.counts(&snap);
        let mut observed = observe::analyse_counted(
            &self.prefix,
            self.name(),
            &owned,
            Some(&counts),
            &lan,
            Some(snap.foreign),
        );
        observed.place = Some(self.place.clone());
        observed.environment = self.environment(&snap);
        observed.observed_at = Some(portmap_core::UtcTime::now());
        Ok(observed)
    }

    fn commit(&mut self, plan: &Plan, record: &[StaleFlows]) -> Result<ApplyReport, Error> {
        let planned = plan.binding(self.name(), self.prefix.as_str(), &self.place)?;
        check_interfaces(&plan.desired.settings)?;
        check_limits(&plan.desired)?;
        if !plan.changes_kernel() && record.is_empty() {
            return Ok(ApplyReport::default());
        }
        // iptables has no generation of its own. portmap's is a hash of the other rules of nat and
        // filter plus the serial its own commits keep, read again right before the first commit;
        // and its own chains must still call for exactly the plan's changes.
        let snap = self.snapshot()?;
        let owned = self.owned(&snap)?;
        let lan = lan_side(&self.netns, &plan.desired.settings.lan_interfaces)?;
        let serial = observe::recorded_serial(&self.prefix, &owned);
        if snap.foreign.wrapping_add(serial) != planned {
            return Err(portmap_core::Refusal::Stale { planned }.into());
        }
        let recorded = observe::recorded_settings(&self.prefix, &owned)
            .map(|s| s.lan_interfaces)
            .unwrap_or_default();
        let mut now = observe::analyse(
            &self.prefix,
            self.name(),
            &owned,
            &lan_side(&self.netns, &recorded)?,
            Some(snap.foreign),
        );
        // Judged at the moment the plan was made, as the plan was.
        now.observed_at = plan.made_at;
        if !portmap_core::plan(&plan.desired, &now).same_changes(plan) {
            return Err(portmap_core::Refusal::Stale { planned }.into());
        }
        let rebuilt = owned.values().all(|c| c.chains.is_empty());
        let counts = self.counts(&snap);
        let current = layout::Layout { tables: owned };
        let steps = Self::steps_for(&snap, &current, &self.prefix, plan, record, &lan, &counts)?;
        self.run_steps(&steps)?;
        // The IPv4 nat commit counts portmap's commits (`layout::serial_rule`); nothing portmap
        // writes moves the hash of the other rules.
        let counted = steps
            .iter()
            .any(|s| (s.family, s.table) == (Family::V4, Table::Nat));
        let serial = if counted { serial.wrapping_add(1) } else { serial };
        Ok(ApplyReport::new(
            steps.iter().map(|s| s.lines).sum(),
            steps.iter().map(|s| s.chains).sum(),
            rebuilt,
        )
        .at_generation(snap.foreign.wrapping_add(serial)))
    }

    fn is_stale(error: &Error) -> bool {
        matches!(error, Error::Refused(portmap_core::Refusal::Stale { .. }))
    }

    fn clear_flows(&mut self, stale: &[StaleFlows]) -> Result<usize, Error> {
        if stale.is_empty() {
            return Ok(0);
        }
        let mut conntrack = Conntrack::open(&netlink_netns(&self.netns))?;
        Ok(conntrack.delete_where(None, |flow| stale.iter().any(|s| flow_is_stale(flow, s)))?)
    }

    fn forget_flows(&mut self) -> Result<(), Error> {
        let snap = self.snapshot()?;
        let owned = self.owned(&snap)?;
        let chain = self.prefix.chain(layout::STALE);
        for family in Family::ALL {
            let has = owned
                .get(&(family, Table::Nat))
                .and_then(|c| c.chains.get(&chain))
                .is_some_and(|rules| !rules.is_empty());
            if has {
                let step = commit::Step {
                    family,
                    table: Table::Nat,
                    phase: "forget",
                    script: format!("*nat\n:{chain} - [0:0]\nCOMMIT\n"),
                    lines: 1,
                    chains: 1,
                };
                self.run_step(&step, &[])?;
            }
        }
        Ok(())
    }

    fn render(&self, model: &Model) -> Result<String, Error> {
        check_interfaces(&model.settings)?;
        check_limits(model)?;
        let lan = lan_side(&self.netns, &model.settings.lan_interfaces)?;
        Ok(render::render(&self.prefix, model, &lan))
    }

    fn tracked_flows(&mut self) -> Result<Option<Vec<portmap_core::TrackedFlow>>, Error> {
        let mut conntrack = Conntrack::open(&netlink_netns(&self.netns))?;
        Ok(Some(conntrack.dump(None)?.iter().map(tracked).collect()))
    }

    fn destroy(&mut self) -> Result<bool, Error> {
        let snap = self.snapshot()?;
        let owned = self.owned(&snap)?;
        let current = layout::Layout { tables: owned };
        let steps = commit::destroy_steps(&current);
        if let Some(why) = &snap.ipv6_unavailable {
            tracing::warn!("{why}: portmap's IPv6 chains, if there are any, are left as they are");
        }
        if steps.is_empty() {
            return Ok(false);
        }
        self.run_steps(&steps)?;
        Ok(true)
    }
}
