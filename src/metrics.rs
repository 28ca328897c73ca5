//! Prometheus metrics: what `portmap metrics` prints and what the watch daemon serves over HTTP
//! (text exposition format 0.0.4, encoded by the `prometheus` crate, which also escapes label
//! values so that no name or description can break a line).
//!
//! [`gather`] reads the kernel once (the table, its mappings' counters, the tracked connections,
//! and, given a configuration, the plan against it) and the last apply's outcome, which apply
//! records under `/run/portmap` ([`ApplyRecord`]). It never fails: what cannot be read becomes
//! `portmap_scrape_success 0` and a warning in the log. [`serve`] answers `GET /metrics` with a
//! gathering on every request, on a thread of its own (`tiny_http`).
//!
//! Metrics (labels `table` and, on a mapping's, `name`, `protocol`, `port`):
//!
//! | metric | type | what |
//! |---|---|---|
//! | `portmap_mapping_connections_total` | counter | new connections forwarded |
//! | `portmap_mapping_packets_total` | counter | packets of forwarded connections, both directions |
//! | `portmap_mapping_bytes_total` | counter | bytes of those packets |
//! | `portmap_mapping_active_flows` | gauge | tracked connections of the mapping now |
//! | `portmap_mapping_damaged` | gauge | 1 when the mapping's kernel objects are incomplete or altered |
//! | `portmap_table_up` | gauge | 1 when portmap's table exists (0: missing) |
//! | `portmap_table_intact` | gauge | 1 when its structure is what portmap builds |
//! | `portmap_mappings` / `portmap_mappings_damaged` | gauge | mappings in the table, damaged ones |
//! | `portmap_pending_flow_cleanups` | gauge | cleanups an interrupted apply left |
//! | `portmap_drift` / `portmap_pending_changes` | gauge | with a configuration: 1 when the kernel differs; changes a plan makes |
//! | `portmap_last_apply_timestamp_seconds` / `portmap_last_apply_success` | gauge | the last apply's end and outcome |
//! | `portmap_scrape_success` | gauge | 1 when the kernel could be read |
//!
//! This module gathers and encodes; it decides nothing about the kernel.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Encoder as _, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use serde::{Deserialize, Serialize};

use crate::{BackendKind, MappingSummary, Model, Netns, Observed, Session, TableState};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where apply records its outcome (`state-…` files), unless `PORTMAP_STATE_DIR` says otherwise.
pub const STATE_DIR: &str = "/run/portmap";

/// The environment variable that moves [`STATE_DIR`] (tests use their own directory).
pub const STATE_DIR_ENV: &str = "PORTMAP_STATE_DIR";

/// The outcome of the last apply to one table of one network namespace, as apply records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApplyRecord {
    /// When the apply ended, in seconds since the Unix epoch.
    pub timestamp: f64,
    /// Whether it succeeded (a plan with nothing to do counts as success).
    pub success: bool,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ApplyRecord {
    /// A record of an apply that ended now.
    pub fn now(success: bool, error: Option<String>) -> Self {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        ApplyRecord {
            timestamp,
            success,
            error,
        }
    }

    /// The file the record of `backend`'s table `table` in `netns` lives in:
    /// `state-net<inode>-<backend>-<table>.json` in the state directory. `None` when the namespace
    /// cannot be identified.
    pub fn path(netns: &Netns, backend: &str, table: &str) -> Option<PathBuf> {
        let inode = portmap_netlink::netns_inode(&netlink_netns(netns)).ok()?;
        let dir = std::env::var_os(STATE_DIR_ENV).map_or_else(|| PathBuf::from(STATE_DIR), PathBuf::from);
        // Backend names and table names are plain identifiers (checked when the backend opened).
        Some(dir.join(format!("state-net{inode}-{backend}-{table}.json")))
    }

    /// Write the record (atomically: a temporary file renamed over the old one), creating the
    /// state directory if needed.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string(self).map_err(io::Error::other)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }

    /// Read a record; `None` when there is none (no apply since boot) or it cannot be read.
    pub fn read(path: &Path) -> Option<ApplyRecord> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Record the outcome of an apply with backend `kind` to `table` in `netns` (the backend's name is
/// resolved the way [`Gatherer`] resolves it, so `--backend iptables` finds the same record as the
/// variant it is). See [`record_apply`].
pub fn record_apply_of(kind: BackendKind, netns: &Netns, table: &str, record: &ApplyRecord) {
    let backend = match Session::open(kind, netns, table) {
        Ok(s) => s.name().to_owned(),
        Err(_) => kind_name(kind),
    };
    record_apply(netns, &backend, table, record);
}

fn kind_name(kind: BackendKind) -> String {
    match kind {
        BackendKind::Nft => "nft".to_owned(),
        BackendKind::Iptables(v) => v.backend_name().to_owned(),
    }
}

/// Record an apply's outcome for `portmap metrics`; a failure to write is logged, never fatal (an
/// apply that worked must not fail because `/run` is read-only).
pub fn record_apply(netns: &Netns, backend: &str, table: &str, record: &ApplyRecord) {
    let Some(path) = ApplyRecord::path(netns, backend, table) else {
        tracing::warn!("cannot identify network namespace {netns}: the apply's outcome is not recorded");
        return;
    };
    match record.write(&path) {
        Ok(()) => {}
        // Whoever may not write under the run directory could not have applied either, and has
        // been told so: one line is enough.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::debug!("cannot record the apply's outcome in {}: {e}", path.display());
        }
        Err(e) => tracing::warn!("cannot record the apply's outcome in {}: {e}", path.display()),
    }
}

fn netlink_netns(netns: &Netns) -> portmap_netlink::Netns {
    match netns {
        Netns::Named(name) => portmap_netlink::Netns::Named(name.clone()),
        Netns::Path(path) => portmap_netlink::Netns::Path(path.clone()),
        _ => portmap_netlink::Netns::Current,
    }
}

/// What one gathering found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// The backend's name (`nft`, `iptables-legacy`, …), or the kind asked for when it did not open.
    pub backend: String,
    /// The table as portmap names it (`inet portmap`, `PORTMAP`).
    pub table: String,
    /// What the kernel holds (with active flows counted), or why it could not be read.
    pub observed: Result<Observed, String>,
    /// With a configuration: how many changes a plan would make (`None` without one, or when it
    /// could not be planned).
    pub pending_changes: Option<usize>,
    /// The last apply's outcome, if one was recorded.
    pub last_apply: Option<ApplyRecord>,
}

/// Which table to gather metrics for, and against which configuration: what [`serve`] runs on
/// each request. Opening a backend per gathering keeps it usable from any thread.
#[derive(Debug, Clone)]
pub struct Gatherer {
    /// The backend.
    pub kind: BackendKind,
    /// The network namespace.
    pub netns: Netns,
    /// The table (nft) or chain prefix (iptables).
    pub table: String,
    /// The configuration to compare with (for `portmap_drift`), if any.
    pub model: Option<Arc<Model>>,
}

impl Gatherer {
    /// Metrics for `table` of `kind` in `netns`, without a configuration.
    pub fn new(kind: BackendKind, netns: Netns, table: impl Into<String>) -> Self {
        Gatherer {
            kind,
            netns,
            table: table.into(),
            model: None,
        }
    }

    /// The same, compared with `model`.
    #[must_use]
    pub fn with_model(mut self, model: Model) -> Self {
        self.model = Some(Arc::new(model));
        self
    }

    /// Read the kernel and the last apply's record.
    pub fn snapshot(&self) -> Snapshot {
        let fallback = || kind_name(self.kind);
        let mut session = match Session::open(self.kind, &self.netns, &self.table) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics: {e}");
                return Snapshot {
                    backend: fallback(),
                    table: self.table.clone(),
                    observed: Err(e.to_string()),
                    pending_changes: None,
                    last_apply: None,
                };
            }
        };
        let backend = session.name().to_owned();
        let observed = session.status().map_err(|e| {
            tracing::warn!("metrics: {e}");
            e.to_string()
        });
        let table = observed
            .as_ref()
            .map_or_else(|_| self.table.clone(), |o| o.table.clone());
        let pending_changes = match (&observed, &self.model) {
            (Ok(o), Some(model)) => {
                let plan = crate::plan(model, o);
                Some(
                    plan.changes.len()
                        + plan.settings.len()
                        + usize::from(plan.table_action != crate::TableAction::Keep)
                        + usize::from(!plan.pending_flows.is_empty()),
                )
            }
            _ => None,
        };
        let last_apply =
            ApplyRecord::path(&self.netns, &backend, &self.table).and_then(|p| ApplyRecord::read(&p));
        Snapshot {
            backend,
            table,
            observed,
            pending_changes,
            last_apply,
        }
    }

    /// [`gather`]: the metrics as text.
    pub fn gather(&self) -> String {
        encode(&self.snapshot())
    }
}

/// Read the kernel once and return the metrics as Prometheus text.
pub fn gather(kind: BackendKind, netns: &Netns, table: &str, model: Option<&Model>) -> String {
    let mut g = Gatherer::new(kind, netns.clone(), table);
    if let Some(m) = model {
        g = g.with_model(m.clone());
    }
    g.gather()
}

/// Metric families being filled for one encoding.
struct Families {
    registry: Registry,
}

impl Families {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let v = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("{e}"));
        let _ = self.registry.register(Box::new(v.clone()));
        v
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let v = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("{e}"));
        let _ = self.registry.register(Box::new(v.clone()));
        v
    }

    fn float(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let v = GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("{e}"));
        let _ = self.registry.register(Box::new(v.clone()));
        v
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Encode a snapshot as Prometheus text (exposition format 0.0.4).
pub fn encode(snapshot: &Snapshot) -> String {
    const MAPPING: &[&str] = &["table", "name", "protocol", "port"];
    const TABLE: &[&str] = &["table", "backend"];
    let f = Families {
        registry: Registry::new(),
    };
    let table = [snapshot.table.as_str(), snapshot.backend.as_str()];
    f.gauge(
        "portmap_scrape_success",
        "Whether portmap could read its table from the kernel (1) or not (0).",
        TABLE,
    )
    .with_label_values(&table)
    .set(i64::from(snapshot.observed.is_ok()));
    if let Ok(observed) = &snapshot.observed {
        let connections = f.counter(
            "portmap_mapping_connections_total",
            "New connections forwarded through the mapping, counted by the kernel.",
            MAPPING,
        );
        let packets = f.counter(
            "portmap_mapping_packets_total",
            "Packets of the mapping's forwarded connections, both directions, counted by the kernel.",
            MAPPING,
        );
        let bytes = f.counter(
            "portmap_mapping_bytes_total",
            "Bytes of the mapping's forwarded connections, both directions, counted by the kernel.",
            MAPPING,
        );
        let flows = f.gauge(
            "portmap_mapping_active_flows",
            "Tracked connections (conntrack entries) DNAT-ed through the mapping now.",
            MAPPING,
        );
        let damaged = f.gauge(
            "portmap_mapping_damaged",
            "Whether the mapping's kernel objects are incomplete or altered (1) or intact (0).",
            MAPPING,
        );
        for m in &observed.mappings {
            let s = MappingSummary::from_observed(m);
            let labels = [
                observed.table.as_str(),
                s.name.as_str(),
                s.protocol.as_str(),
                s.port.as_str(),
            ];
            if let Some(c) = m.counters {
                connections.with_label_values(&labels).inc_by(c.connections);
                packets.with_label_values(&labels).inc_by(c.packets);
                bytes.with_label_values(&labels).inc_by(c.bytes);
            }
            if let Some(n) = m.active_flows {
                flows.with_label_values(&labels).set(gauge_value(n));
            }
            damaged.with_label_values(&labels).set(i64::from(m.is_damaged()));
        }
        let up = observed.state != TableState::Missing;
        f.gauge(
            "portmap_table_up",
            "Whether portmap's table exists (1) or is missing (0).",
            TABLE,
        )
        .with_label_values(&table)
        .set(i64::from(up));
        f.gauge(
            "portmap_table_intact",
            "Whether the table's structure is what portmap builds (1), or it is missing or was changed by hand (0).",
            TABLE,
        )
        .with_label_values(&table)
        .set(i64::from(observed.state == TableState::Intact));
        f.gauge("portmap_mappings", "Mappings in the table.", TABLE)
            .with_label_values(&table)
            .set(gauge_value(observed.mappings.len() as u64));
        f.gauge(
            "portmap_mappings_damaged",
            "Mappings whose kernel objects are incomplete or altered.",
            TABLE,
        )
        .with_label_values(&table)
        .set(gauge_value(
            observed.mappings.iter().filter(|m| m.is_damaged()).count() as u64,
        ));
        f.gauge(
            "portmap_pending_flow_cleanups",
            "Old forwards whose tracked connections an interrupted apply left to remove.",
            TABLE,
        )
        .with_label_values(&table)
        .set(gauge_value(observed.pending_flows.len() as u64));
    }
    if let Some(n) = snapshot.pending_changes {
        f.gauge(
            "portmap_drift",
            "Whether the kernel differs from the configuration (1) or matches it (0).",
            TABLE,
        )
        .with_label_values(&table)
        .set(i64::from(n > 0));
        f.gauge(
            "portmap_pending_changes",
            "Changes a plan against the configuration would make (mappings, settings, the table, cleanups).",
            TABLE,
        )
        .with_label_values(&table)
        .set(gauge_value(n as u64));
    }
    if let Some(record) = &snapshot.last_apply {
        f.float(
            "portmap_last_apply_timestamp_seconds",
            "When the last apply to this table ended, in seconds since the Unix epoch.",
            TABLE,
        )
        .with_label_values(&table)
        .set(record.timestamp);
        f.gauge(
            "portmap_last_apply_success",
            "Whether the last apply to this table succeeded (1) or failed (0).",
            TABLE,
        )
        .with_label_values(&table)
        .set(i64::from(record.success));
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&f.registry.gather(), &mut out) {
        tracing::warn!("metrics: cannot encode: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Metrics of a running `portmap watch` (exposition format 0.0.4), served next to the table's by
/// `watch --metrics`: whether it is up and ready, its repairs and reloads, and whether it is
/// backing off because another program keeps undoing its repairs.
pub fn encode_watch(status: &crate::WatchStatus) -> String {
    let f = Families {
        registry: Registry::new(),
    };
    let set = |name: &str, help: &str, value: i64| {
        f.gauge(name, help, &[]).with_label_values::<&str>(&[]).set(value);
    };
    let count = |name: &str, help: &str, value: u64| {
        f.counter(name, help, &[])
            .with_label_values::<&str>(&[])
            .inc_by(value);
    };
    set(
        "portmap_watch_ready",
        "Whether the watch has made its first apply (1) or not yet (0).",
        i64::from(status.ready),
    );
    count(
        "portmap_watch_repairs_total",
        "Repairs the watch made after its first apply.",
        status.repairs,
    );
    count(
        "portmap_watch_failed_repairs_total",
        "Repair attempts of the watch that failed.",
        status.failed_repairs,
    );
    count(
        "portmap_watch_reloads_total",
        "Reloads of the configuration that took effect.",
        status.reloads,
    );
    count(
        "portmap_watch_failed_reloads_total",
        "Reloads refused because the configuration file was not valid.",
        status.failed_reloads,
    );
    set(
        "portmap_watch_backing_off",
        "Whether the watch holds repairs back because another program keeps undoing them (1) or not (0).",
        i64::from(status.backing_off),
    );
    let since_epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    f.float(
        "portmap_watch_start_timestamp_seconds",
        "When the watch started, in seconds since the Unix epoch.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(since_epoch(status.started));
    if let Some(t) = status.last_check {
        f.float(
            "portmap_watch_last_check_timestamp_seconds",
            "When the watch last compared the kernel with its configuration, in seconds since the Unix epoch.",
            &[],
        )
        .with_label_values::<&str>(&[])
        .set(since_epoch(t));
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&f.registry.gather(), &mut out) {
        tracing::warn!("metrics: cannot encode: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A running metrics server: answers `GET /metrics` until dropped (or [`MetricsServer::stop`]).
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// The address it listens on (with the port the kernel chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait for the serving thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serve metrics over HTTP on `addr` (e.g. `127.0.0.1:9300`; port 0 picks one): `GET /metrics`
/// answers with what `gather` returns at that moment; anything else is a 404, a method other
/// than GET or HEAD a 405. Requests are answered one at a time on one thread; the listening
/// socket is created in the calling thread's network namespace.
pub fn serve(
    addr: impl ToSocketAddrs,
    gather: impl Fn() -> String + Send + 'static,
) -> io::Result<MetricsServer> {
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on"))?;
    let server = tiny_http::Server::http(addr).map_err(io::Error::other)?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("the metrics server listens on no IP address"))?;
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = std::thread::Builder::new()
        .name("portmap-metrics".into())
        .spawn(move || {
            for request in serving.incoming_requests() {
                answer(request, &gather);
            }
        })?;
    Ok(MetricsServer {
        server,
        addr,
        thread: Some(thread),
    })
}

fn answer(request: tiny_http::Request, gather: &dyn Fn() -> String) {
    use tiny_http::{Header, Method, Response};
    let path = request.url().split('?').next().unwrap_or_default().to_owned();
    let head = *request.method() == Method::Head;
    let response = match (request.method(), path.as_str()) {
        (Method::Get | Method::Head, "/metrics") => {
            let mut r = Response::from_string(if head { String::new() } else { gather() });
            if let Ok(h) = Header::from_bytes("Content-Type", CONTENT_TYPE) {
                r = r.with_header(h);
            }
            r
        }
        (Method::Get | Method::Head, "/") => Response::from_string("portmap metrics: see /metrics\n"),
        (Method::Get | Method::Head, _) => {
            Response::from_string("not found; metrics are at /metrics\n").with_status_code(404)
        }
        _ => Response::from_string("only GET /metrics\n").with_status_code(405),
    };
    if let Err(e) = request.respond(response) {
        tracing::debug!("metrics: answering a request: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed_with(name: &str) -> Observed {
        let mut observed = Observed::missing("nft", "inet portmap", Some(1));
        observed.state = TableState::Intact;
        let mut m = crate::ObservedMapping::found(
            name,
            vec![crate::Forward {
                transport: crate::Transport::Tcp,
                port: 8080,
                to: "192.168.1.66".parse().expect("address"),
                to_port: 80,
                listen: None,
            }],
        );
        m.counters = Some(crate::Counters {
            connections: 3,
            packets: 30,
            bytes: 3000,
        });
        m.active_flows = Some(2);
        observed.mappings.push(m);
        observed
    }

    fn snapshot(observed: Observed) -> Snapshot {
        Snapshot {
            backend: "nft".to_owned(),
            table: observed.table.clone(),
            observed: Ok(observed),
            pending_changes: Some(0),
            last_apply: Some(ApplyRecord::now(false, Some("refused".to_owned()))),
        }
    }

    #[test]
    fn the_text_is_prometheus_0_0_4_and_reads_back() {
        let text = encode(&snapshot(observed_with("web")));
        assert!(
            text.contains("# TYPE portmap_mapping_connections_total counter\n"),
            "{text}"
        );
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        let value = |metric: &str| {
            let sample = scrape
                .samples
                .iter()
                .find(|s| s.metric == metric)
                .unwrap_or_else(|| panic!("no {metric} in\n{text}"));
            match sample.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            }
        };
        assert!((value("portmap_mapping_connections_total") - 3.0).abs() < 1e-9);
        assert!((value("portmap_mapping_bytes_total") - 3000.0).abs() < 1e-9);
        assert!((value("portmap_mapping_active_flows") - 2.0).abs() < 1e-9);
        assert!((value("portmap_last_apply_success")).abs() < 1e-9);
        assert!((value("portmap_drift")).abs() < 1e-9);
    }

    #[test]
    fn a_label_value_cannot_break_a_line() {
        // Validation never lets such a name into a table; a table edited by hand could.
        let hostile = "we\"b\nportmap_table_up 0\\";
        let text = encode(&snapshot(observed_with(hostile)));
        assert!(
            !text.lines().any(|l| l.starts_with("portmap_table_up 0")),
            "{text}"
        );
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == "portmap_mapping_connections_total")
            .expect("the mapping's counter");
        assert!(
            sample.labels.get("name").is_some_and(|n| n.contains("we")),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("portmap_mapping_connections_total"))
                .count(),
            1
        );
    }

    #[test]
    fn an_unreadable_table_is_a_failed_scrape() {
        let text = encode(&Snapshot {
            backend: "nft".to_owned(),
            table: "portmap".to_owned(),
            observed: Err("permission denied".to_owned()),
            pending_changes: None,
            last_apply: None,
        });
        assert!(
            text.contains("portmap_scrape_success{backend=\"nft\",table=\"portmap\"} 0"),
            "{text}"
        );
        assert!(!text.contains("portmap_table_up"), "{text}");
    }

    #[test]
    fn the_apply_record_round_trips() {
        let dir = std::env::temp_dir().join(format!("portmap-metrics-{}", std::process::id()));
        let path = dir.join("state-net1-nft-portmap.json");
        let record = ApplyRecord::now(true, None);
        record.write(&path).expect("write");
        let back = ApplyRecord::read(&path).expect("read back");
        assert_eq!((back.success, back.error), (true, None));
        // JSON keeps the time to well under a millisecond.
        assert!((back.timestamp - record.timestamp).abs() < 1e-3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
