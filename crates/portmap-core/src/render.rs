//! Plans and observed kernel state for people (aligned text, ANSI colour on request) and for machines
//! (JSON). Formatting only: what changes is decided by `plan.rs`, and nothing here talks to a kernel.
//!
//! Strings that come from the kernel or from a plan file (observed descriptions, damage reasons,
//! warnings) are printed with control and formatting characters escaped, so they cannot move the
//! cursor or recolour a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::{Mapping, Observed, ObservedMapping, Settings, TableState};
use crate::plan::{Change, DeleteReason, ForwardRun, Plan, TableAction, fold_forwards};
use crate::validate::is_unsafe_char;

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// ANSI styling, or none.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }
}

/// `text` with control and invisible formatting characters escaped (`\n`, `\u{202e}`).
fn clean(text: &str) -> Cow<'_, str> {
    if text.chars().any(is_unsafe_char) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if is_unsafe_char(c) {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn settings_line(s: &Settings) -> String {
    let list = |l: &[String]| {
        if l.is_empty() {
            "(none)".to_owned()
        } else {
            l.iter().map(|i| clean(i)).collect::<Vec<_>>().join(", ")
        }
    };
    format!(
        "wan: {}; lan: {}; masquerade: {}; hairpin: {}",
        list(&s.wan_interfaces),
        list(&s.lan_interfaces),
        on_off(s.masquerade),
        on_off(s.hairpin)
    )
}

/// One `+` or `-` line before alignment.
struct Row {
    mark: char,
    name: String,
    /// protocol, port, target — or `None` when the forwards are not one run.
    cells: Option<[String; 3]>,
    /// What goes where the cells would (the run list) when `cells` is `None`.
    runs: String,
    extra: String,
}

fn target(run_to: std::net::IpAddr, to_port: crate::model::PortRange) -> String {
    match run_to {
        std::net::IpAddr::V4(a) => format!("{a}:{to_port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{to_port}"),
    }
}

fn create_row(m: &Mapping, now: Option<crate::time::UtcTime>) -> Row {
    let mut extra = String::new();
    if !m.listen.is_empty() {
        let list: Vec<String> = m.listen.iter().map(ToString::to_string).collect();
        let _ = write!(extra, "  listen {}", list.join(", "));
    }
    if !m.allow_from.is_empty() {
        let list: Vec<String> = m.allow_from.iter().map(ToString::to_string).collect();
        let _ = write!(extra, "  allow_from {}", list.join(", "));
    }
    if let Some(limit) = &m.limit {
        let _ = write!(extra, "  limit {limit}");
    }
    if let Some(group) = m.log {
        let _ = write!(extra, "  log (group {group})");
    }
    if let Some(d) = &m.description {
        let _ = write!(extra, "  \"{}\"", clean(d));
    }
    if let Some(t) = m.expires {
        let _ = write!(extra, "  ({})", crate::time::expires_text(t, now));
    }
    Row {
        mark: '+',
        name: m.name.clone(),
        cells: Some([
            m.protocol.to_string(),
            m.port.to_string(),
            target(m.to, m.to_port),
        ]),
        runs: String::new(),
        extra,
    }
}

fn delete_row(before: &ObservedMapping, reason: DeleteReason) -> Row {
    let runs = fold_forwards(&before.forwards);
    let why = match reason {
        DeleteReason::NotInConfig => "  (not in the configuration)",
        DeleteReason::Disabled => "  (disabled)",
        DeleteReason::Expired => "  (expired: its `expires` has come)",
    };
    let (cells, list) = match runs.as_slice() {
        [run] => (Some(run_cells(run)), String::new()),
        _ => (None, crate::plan::describe_runs(&runs)),
    };
    Row {
        mark: '-',
        name: clean(&before.name).into_owned(),
        cells,
        runs: list,
        extra: why.to_owned(),
    }
}

fn run_cells(run: &ForwardRun) -> [String; 3] {
    [
        run.protocol.to_string(),
        run.port.to_string(),
        target(run.to, run.to_port),
    ]
}

/// Column widths for a set of rows.
fn widths(rows: &[&Row]) -> [usize; 4] {
    let mut w = [0usize; 4];
    for r in rows {
        w[0] = w[0].max(r.name.chars().count());
        if let Some(cells) = &r.cells {
            for (k, c) in cells.iter().enumerate() {
                w[k + 1] = w[k + 1].max(c.chars().count());
            }
        }
    }
    w
}

fn write_row(out: &mut String, row: &Row, w: [usize; 4], paint: Paint) {
    let colour = if row.mark == '+' { GREEN } else { RED };
    let mut line = format!("{} ", paint.wrap(colour, &row.mark.to_string()));
    let pad = w[0].saturating_sub(row.name.chars().count());
    line.push_str(&paint.wrap(BOLD, &row.name));
    line.push_str(&" ".repeat(pad));
    match &row.cells {
        Some([protocol, port, to]) => {
            let _ = write!(
                line,
                "  {protocol:<p$}  {port:<o$} → {to:<t$}",
                p = w[1],
                o = w[2],
                t = w[3]
            );
        }
        None => {
            let _ = write!(line, "  {}", row.runs);
        }
    }
    line.push_str(&row.extra);
    out.push_str(line.trim_end());
    out.push('\n');
}

/// A plan for people, Terraform-like: the table action, setting changes, one block per mapping
/// change (`+` create, `~` change with `field: before → after` lines, `-` delete with its reason),
/// then `Plan: 2 to create, 1 to change, 1 to delete.`; for an empty plan, `No changes. …`.
/// Warnings are not included (see [`render_warnings`]). ANSI colour only when `color` is true.
pub fn render_plan(plan: &Plan, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    if plan.is_empty() {
        let expired = plan
            .desired
            .mappings
            .iter()
            .filter(|m| crate::time::is_expired(m.expires, plan.made_at))
            .count();
        let of_them = if expired > 0 {
            format!(", {expired} of them expired")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "No changes. The kernel matches the configuration ({}{of_them}).",
            plural(plan.desired.mappings.len(), "mapping", "mappings")
        );
        return out;
    }
    let generation = plan
        .generation
        .map(|g| format!(", generation {g}"))
        .unwrap_or_default();
    let header = format!(
        "Plan for table {} (backend {}{generation}):",
        clean(&plan.table),
        clean(&plan.backend)
    );
    let _ = writeln!(out, "{}\n", paint.wrap(BOLD, &header));

    match &plan.table_action {
        TableAction::Keep if !plan.observed_can_expire && plan.desired.needs_expiry() => {
            let _ = writeln!(
                out,
                "{} rebuild table {}: its maps were made without element timeouts, which `expires` needs; \
                 the mappings' counters are kept\n",
                paint.wrap(YELLOW, "~"),
                clean(&plan.table)
            );
        }
        TableAction::Keep => {}
        TableAction::Create => {
            let _ = writeln!(
                out,
                "{} create table {}",
                paint.wrap(GREEN, "+"),
                clean(&plan.table)
            );
            let _ = writeln!(out, "    {}\n", settings_line(&plan.desired.settings));
        }
        TableAction::Repair { reasons } => {
            let _ = writeln!(
                out,
                "{} repair table {}: it was changed by hand and is rebuilt from the configuration",
                paint.wrap(YELLOW, "!"),
                clean(&plan.table)
            );
            for r in reasons {
                let _ = writeln!(out, "    - {}", clean(r));
            }
            out.push('\n');
        }
    }
    if !plan.settings.is_empty() {
        let _ = writeln!(
            out,
            "{} {}",
            paint.wrap(YELLOW, "~"),
            paint.wrap(BOLD, "settings")
        );
        for s in &plan.settings {
            let _ = writeln!(out, "    {}: {} → {}", s.field, clean(&s.before), clean(&s.after));
        }
        out.push('\n');
    }

    let rows: Vec<Option<Row>> = plan
        .changes
        .iter()
        .map(|c| match c {
            Change::Create { index } => plan
                .desired
                .mappings
                .get(*index)
                .map(|mapping| create_row(mapping, plan.made_at)),
            Change::Delete { before, reason } => Some(delete_row(before, *reason)),
            Change::Update { .. } | Change::Repair { .. } => None,
        })
        .collect();
    let w = widths(&rows.iter().flatten().collect::<Vec<_>>());
    for (change, row) in plan.changes.iter().zip(&rows) {
        match (change, row) {
            (Change::Update { after, fields, .. }, _) => {
                let _ = writeln!(
                    out,
                    "{} {}",
                    paint.wrap(YELLOW, "~"),
                    paint.wrap(BOLD, &after.name)
                );
                for f in fields {
                    if f.field == "forwards" {
                        // Each side lists runs that contain arrows themselves: one line per side.
                        let _ = writeln!(out, "    forwards, before: {}", clean(&f.before));
                        let _ = writeln!(out, "    forwards, after:  {}", clean(&f.after));
                        continue;
                    }
                    let (before, after) = if f.field == "description" {
                        (quoted_or_none(&f.before), quoted_or_none(&f.after))
                    } else {
                        (clean(&f.before).into_owned(), clean(&f.after).into_owned())
                    };
                    let _ = writeln!(out, "    {}: {before} → {after}", f.field);
                }
            }
            (Change::Repair { before, after }, _) => {
                let _ = writeln!(
                    out,
                    "{} {}  damaged: its kernel objects are removed and created again as configured",
                    paint.wrap(YELLOW, "!"),
                    paint.wrap(BOLD, &after.name)
                );
                for d in &before.damage {
                    let _ = writeln!(out, "    - {}", clean(d));
                }
            }
            (Change::Create { .. } | Change::Delete { .. }, Some(row)) => {
                write_row(&mut out, row, w, paint);
                if let Change::Delete { before, .. } = change {
                    for d in &before.damage {
                        let _ = writeln!(out, "    - damaged: {}", clean(d));
                    }
                }
            }
            _ => {}
        }
    }
    if !plan.changes.is_empty() {
        out.push('\n');
    }
    for change in &plan.sources {
        let (mark, what) = match (&change.before, &change.after) {
            (None, _) => (paint.wrap(GREEN, "+"), "create"),
            (_, None) => (paint.wrap(RED, "-"), "delete"),
            _ => (paint.wrap(YELLOW, "~"), "change"),
        };
        let _ = write!(
            out,
            "{mark} {} source list {}",
            what,
            paint.wrap(BOLD, &change.name)
        );
        if change.used_by.is_empty() {
            let _ = writeln!(out);
        } else {
            let _ = writeln!(out, " (used by {})", change.used_by.join(", "));
        }
        let (added, removed) = change.delta();
        for net in &added {
            let _ = writeln!(out, "    + {net}");
        }
        for net in &removed {
            let _ = writeln!(out, "    - {net}");
        }
    }
    if !plan.sources.is_empty() {
        out.push('\n');
    }
    if !plan.pending_flows.is_empty() {
        let _ = writeln!(
            out,
            "{} finish removing the tracked connections of {} that an interrupted apply left behind\n",
            paint.wrap(YELLOW, "!"),
            plural(plan.pending_flows.len(), "old forward", "old forwards")
        );
    }
    let counts = plan.counts();
    let mut summary = format!(
        "Plan: {} to create, {} to change, {} to delete",
        counts.create, counts.update, counts.delete
    );
    if counts.repair > 0 {
        let _ = write!(summary, ", {} to repair", counts.repair);
    }
    if !plan.settings.is_empty() {
        let _ = write!(
            summary,
            "; {} to change",
            plural(plan.settings.len(), "setting", "settings")
        );
    }
    if !plan.sources.is_empty() {
        let _ = write!(
            summary,
            "; {} to update",
            plural(plan.sources.len(), "source list", "source lists")
        );
    }
    let _ = writeln!(out, "{}.", paint.wrap(BOLD, &summary));
    out
}

/// The plan's warnings under a `Warnings:` heading (empty when there are none). The CLI prints them
/// to standard error; `Display` for `Plan` appends them to [`render_plan`].
pub fn render_warnings(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    write_warnings(&mut out, plan, Paint(color));
    out
}

fn quoted_or_none(text: &str) -> String {
    if text.is_empty() {
        "(none)".to_owned()
    } else {
        format!("\"{}\"", clean(text))
    }
}

fn write_warnings(out: &mut String, plan: &Plan, paint: Paint) {
    if plan.warnings.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", paint.wrap(YELLOW, "Warnings:"));
    for w in &plan.warnings {
        let _ = writeln!(out, "  - {}", clean(w));
    }
}

/// A plan for machines: the plan's serde form plus
/// `"summary": {"create": n, "update": n, "repair": n, "delete": n, "table": "keep|create|repair"}`.
/// [`Plan::from_json`] reads it back.
pub fn plan_json(plan: &Plan) -> Value {
    let crate::plan::Counts {
        create,
        update,
        repair,
        delete,
    } = plan.counts();
    let table = match plan.table_action {
        TableAction::Keep => "keep",
        TableAction::Create => "create",
        TableAction::Repair { .. } => "repair",
    };
    let mut value = serde_json::to_value(plan).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(
            "summary".to_owned(),
            json!({ "create": create, "update": update, "repair": repair, "delete": delete, "table": table }),
        );
    }
    value
}

/// One observed mapping folded back into configuration terms, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingSummary {
    /// Mapping name.
    pub name: String,
    /// `tcp`, `udp` or `both`; when the forwards are not one run, every protocol present joined by `,`.
    pub protocol: String,
    /// External port or range; when not one run, every run's ports joined by `,`.
    pub port: String,
    /// Inner host; when not one run, every host joined by `,`.
    pub to: String,
    /// Inner port or range; when not one run, every run's inner ports joined by `,`.
    pub to_port: String,
    /// Allowed source prefixes (empty: everyone).
    pub allow_from: Vec<String>,
    /// The router's addresses it answers on (empty: any address of the WAN interfaces).
    pub listen: Vec<String>,
    /// Description, if any.
    pub description: Option<String>,
    /// The runs (`tcp 8080 → 192.168.1.66:80`) when the forwards do not form one mapping (a table
    /// edited by hand); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<String>,
    /// `intact`, or `damaged` when the mapping's kernel objects are incomplete or altered.
    pub state: &'static str,
    /// What is wrong with a damaged mapping, saying what the kernel enforces instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<String>,
    /// Whether the kernel logs its new connections.
    pub log: bool,
    /// The nflog group it logs to, when it logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_group: Option<u16>,
    /// The cap on new connections the kernel enforces (`20/second burst 40`), or null.
    pub limit: Option<String>,
    /// What the kernel counted for it (null when the backend did not read counters).
    pub counters: Option<crate::model::Counters>,
    /// Tracked connections DNAT-ed through it right now (null when not counted).
    pub active_flows: Option<u64>,
    /// When the kernel removes (or stops matching) its forwards, if it does (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<crate::time::UtcTime>,
    /// Seconds from the observation until `expires`: negative once it has passed (the mapping
    /// then forwards nothing). Only with `expires`, when the moment of observation is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<i64>,
}

impl MappingSummary {
    /// Fold an observed mapping's forwards back into protocol, ports and target.
    pub fn from_observed(observed: &ObservedMapping) -> Self {
        let runs = fold_forwards(&observed.forwards);
        let join = |f: &dyn Fn(&ForwardRun) -> String| {
            let mut parts: Vec<String> = Vec::new();
            for run in &runs {
                let p = f(run);
                if !parts.contains(&p) {
                    parts.push(p);
                }
            }
            parts.join(",")
        };
        MappingSummary {
            name: observed.name.clone(),
            protocol: join(&|r| r.protocol.to_string()),
            port: join(&|r| r.port.to_string()),
            to: join(&|r| r.to.to_string()),
            to_port: join(&|r| r.to_port.to_string()),
            allow_from: observed.allow_from.iter().map(ToString::to_string).collect(),
            listen: crate::model::listen_of(&observed.forwards)
                .into_iter()
                .flatten()
                .map(|a| a.to_string())
                .collect(),
            description: observed.description.clone(),
            forwards: if runs.len() > 1 {
                runs.iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
            state: if observed.is_damaged() {
                "damaged"
            } else {
                "intact"
            },
            damage: observed.damage.clone(),
            log: observed.log.is_some(),
            log_group: observed.log,
            limit: observed.limit.map(|l| l.to_string()),
            counters: observed.counters,
            active_flows: observed.active_flows,
            expires: observed.expires,
            expires_in_seconds: None,
        }
    }

    /// [`MappingSummary::from_observed`] with the time left until it expires, counted from `now`.
    pub fn at(observed: &ObservedMapping, now: Option<crate::time::UtcTime>) -> Self {
        let mut s = MappingSummary::from_observed(observed);
        s.expires_in_seconds = observed.expires.zip(now).map(|(t, n)| t.seconds_from(n));
        s
    }
}

impl From<&ObservedMapping> for MappingSummary {
    fn from(observed: &ObservedMapping) -> Self {
        MappingSummary::from_observed(observed)
    }
}

fn state_name(state: &TableState) -> &'static str {
    match state {
        TableState::Missing => "missing",
        TableState::Intact => "intact",
        TableState::Damaged { .. } => "damaged",
    }
}

/// What the kernel holds, for people: the table's health, the settings, and an aligned table of
/// mappings (`NAME PROTOCOL PORT TO TO_PORT ALLOW_FROM DESCRIPTION`).
pub fn render_status(observed: &Observed, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    let table = clean(&observed.table);
    let backend = clean(&observed.backend);
    match &observed.state {
        TableState::Missing => {
            let _ = writeln!(
                out,
                "Table {table} (backend {backend}) does not exist: portmap forwards nothing. Applying a configuration \
                 creates it."
            );
            return out;
        }
        TableState::Intact => {
            let damaged = observed.mappings.iter().filter(|m| m.is_damaged()).count();
            if damaged == 0 {
                let _ = writeln!(
                    out,
                    "Table {table} (backend {backend}): intact, {}.",
                    plural(observed.mappings.len(), "mapping", "mappings")
                );
            } else {
                let _ = writeln!(
                    out,
                    "Table {table} (backend {backend}): {}, {} of which {} {}; applying the configuration repairs them.",
                    paint.wrap(RED, "mappings damaged"),
                    plural(observed.mappings.len(), "mapping", "mappings"),
                    damaged,
                    if damaged == 1 { "is damaged" } else { "are damaged" }
                );
            }
        }
        TableState::Damaged { reasons } => {
            let _ = writeln!(
                out,
                "Table {table} (backend {backend}): {}, {}. It was changed by hand; applying the configuration repairs it:",
                paint.wrap(RED, "damaged"),
                plural(observed.mappings.len(), "mapping", "mappings")
            );
            for r in reasons {
                let _ = writeln!(out, "    - {}", clean(r));
            }
        }
    }
    let _ = writeln!(out, "Settings: {}", settings_line(&observed.settings));
    if !observed.pending_flows.is_empty() {
        let _ = writeln!(
            out,
            "{} an interrupted apply left the tracked connections of {} to remove; the next apply removes them.",
            paint.wrap(YELLOW, "Pending:"),
            plural(observed.pending_flows.len(), "old forward", "old forwards")
        );
    }
    if observed.mappings.is_empty() {
        return out;
    }
    out.push('\n');
    let summaries: Vec<MappingSummary> = observed
        .mappings
        .iter()
        .map(|m| MappingSummary::at(m, observed.observed_at))
        .collect();
    // Columns for what some mapping has: limits and logging, counters when they were read.
    let with_limits = summaries.iter().any(|s| s.limit.is_some() || s.log);
    let with_listen = summaries.iter().any(|s| !s.listen.is_empty());
    let with_expires = summaries.iter().any(|s| s.expires.is_some());
    let with_counters = summaries
        .iter()
        .any(|s| s.counters.is_some() || s.active_flows.is_some());
    let mut header: Vec<String> = ["NAME", "PROTOCOL", "PORT", "TO", "TO_PORT", "ALLOW_FROM"]
        .map(str::to_owned)
        .to_vec();
    if with_listen {
        header.insert(2, "LISTEN".to_owned());
    }
    if with_limits {
        header.extend(["LIMIT", "LOG"].map(str::to_owned));
    }
    if with_counters {
        header.extend(["CONNECTIONS", "ACTIVE", "PACKETS", "BYTES"].map(str::to_owned));
    }
    if with_expires {
        header.push("EXPIRES".to_owned());
    }
    header.push("DESCRIPTION".to_owned());
    let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    let number = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let mut row = vec![
                clean(&s.name).into_owned(),
                dash(s.protocol.clone()),
                dash(s.port.clone()),
                dash(s.to.clone()),
                dash(s.to_port.clone()),
                if s.damage.is_empty() {
                    dash(s.allow_from.join(","))
                } else {
                    "(damaged)".to_owned()
                },
            ];
            if with_listen {
                row.insert(
                    2,
                    if s.listen.is_empty() {
                        "any".to_owned()
                    } else {
                        s.listen.join(",")
                    },
                );
            }
            if with_limits {
                row.push(dash(s.limit.clone().unwrap_or_default()));
                row.push(
                    s.log_group
                        .map_or_else(|| "-".to_owned(), |g| format!("group {g}")),
                );
            }
            if with_counters {
                row.push(number(s.counters.map(|c| c.connections)));
                row.push(number(s.active_flows));
                row.push(number(s.counters.map(|c| c.packets)));
                row.push(number(s.counters.map(|c| c.bytes)));
            }
            if with_expires {
                row.push(s.expires.map_or_else(
                    || "never".to_owned(),
                    |t| crate::time::expires_text(t, observed.observed_at),
                ));
            }
            row.push(dash(
                s.description
                    .as_deref()
                    .map(|d| clean(d).into_owned())
                    .unwrap_or_default(),
            ));
            row
        })
        .collect();
    let mut w = vec![0usize; header.len()];
    for r in std::iter::once(&header).chain(&rows) {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let line = |r: &Vec<String>, bold_first: bool| {
        let mut s = String::new();
        for (k, c) in r.iter().enumerate() {
            let pad = if k + 1 == r.len() {
                0
            } else {
                w[k] - c.chars().count() + 2
            };
            if k == 0 && bold_first {
                s.push_str(&paint.wrap(BOLD, c));
            } else {
                s.push_str(c);
            }
            s.push_str(&" ".repeat(pad));
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", paint.wrap(BOLD, &line(&header, false)));
    for (row, summary) in rows.iter().zip(&summaries) {
        let _ = writeln!(out, "{}", line(row, true));
        if !summary.forwards.is_empty() {
            let _ = writeln!(
                out,
                "    {} not one mapping: {}",
                paint.wrap(YELLOW, "!"),
                summary.forwards.join(", ")
            );
        }
        for d in &summary.damage {
            let _ = writeln!(out, "    {} damaged: {}", paint.wrap(RED, "!"), clean(d));
        }
    }
    out
}

/// What the kernel holds, for machines: `backend`, `table`, `generation`, `state`
/// (`missing|intact|damaged`), `reasons`, `settings` (null when the table is missing) and `mappings`
/// as [`MappingSummary`] objects.
pub fn status_json(observed: &Observed) -> Value {
    let reasons: &[String] = match &observed.state {
        TableState::Damaged { reasons } => reasons,
        _ => &[],
    };
    let settings = match observed.state {
        TableState::Missing => Value::Null,
        _ => serde_json::to_value(&observed.settings).unwrap_or(Value::Null),
    };
    let mappings: Vec<MappingSummary> = observed
        .mappings
        .iter()
        .map(|m| MappingSummary::at(m, observed.observed_at))
        .collect();
    json!({
        "backend": observed.backend,
        "table": observed.table,
        "generation": observed.generation,
        "state": state_name(&observed.state),
        "reasons": reasons,
        "settings": settings,
        "mappings": mappings,
        "pending_flows": observed.pending_flows,
    })
}
