//! The only part of import that touches the system: it dumps the nftables ruleset over netlink
//! and runs `iptables-legacy-save`, `iptables-nft-save` and their ip6tables twins in the chosen
//! namespace (directly, never through a shell), then hands the text and objects to the pure
//! readers. It only reads: no message it sends changes the kernel.

use portmap_core::Netns;
use portmap_iptables::{Family, Variant, variant};
use portmap_netlink::Socket;

use super::nft::{NftTable, TableKind, classify};
use super::{Found, Imported, convert, iptables, nft};

/// Which rules to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// Native nftables tables only.
    Nft,
    /// iptables and ip6tables, legacy and nft variants.
    Iptables,
    /// Both (the default).
    #[default]
    All,
}

/// What to import and how.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Which rules to read.
    pub from: ReadFrom,
    /// The `wan` interfaces to write instead of the inferred one.
    pub wan: Vec<String>,
}

impl ImportOptions {
    /// Options reading `from`, with `wan` inferred.
    pub fn new(from: ReadFrom) -> Self {
        ImportOptions {
            from,
            wan: Vec::new(),
        }
    }
}

/// Why nothing could be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// No source of rules could be read at all.
    #[error("no rules could be read, so nothing was imported{}:\n{}", if *.permission { " (reading the ruleset needs CAP_NET_ADMIN: run as root)" } else { "" }, .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    NothingRead {
        /// What went wrong with each source.
        problems: Vec<String>,
        /// Whether a source was refused for want of privileges.
        permission: bool,
    },
}

fn netlink_netns(netns: &Netns) -> portmap_netlink::Netns {
    match netns {
        Netns::Named(n) => portmap_netlink::Netns::Named(n.clone()),
        Netns::Path(p) => portmap_netlink::Netns::Path(p.clone()),
        _ => portmap_netlink::Netns::Current,
    }
}

/// Dump every table of the families portmap-netlink models, with chains, rules, sets and elements.
pub fn dump_nft(netns: &Netns) -> Result<Vec<NftTable>, portmap_netlink::Error> {
    let mut socket = Socket::open(&netlink_netns(netns))?;
    let mut out = Vec::new();
    for table in socket.tables()? {
        let chains = socket.chains(table.family, &table.name)?;
        let rules = socket.rules(table.family, &table.name)?;
        let mut sets = Vec::new();
        for set in socket.sets(table.family, &table.name)? {
            let elements = socket.elements(table.family, &table.name, &set.name)?;
            sets.push((set, elements));
        }
        out.push(NftTable {
            table,
            chains,
            rules,
            sets,
        });
    }
    Ok(out)
}

/// `iptables-*-save` output of one family and variant.
fn save(netns: &Netns, family: Family, v: Variant) -> Result<String, String> {
    let program = v.program(family, "save").map_err(|e| e.to_string())?;
    // No `-t nat`: naming a legacy table makes the kernel create it; without, only the tables that
    // exist are printed.
    let out = variant::run(&program, &[], None, netns).map_err(|e| e.to_string())?;
    if out.code != Some(0) {
        let err = out.stderr.trim();
        let hint = if err.contains("Permission denied") || err.contains("Operation not permitted") {
            " (reading the rules needs CAP_NET_ADMIN: run as root)"
        } else {
            ""
        };
        return Err(format!(
            "{} failed ({}){hint}: {}",
            program.display(),
            out.code
                .map_or("killed".to_owned(), |c| format!("exit status {c}")),
            super::one_line(err)
        ));
    }
    Ok(out.stdout)
}

/// Read the forwards in `netns` and convert them. Sources that cannot be read (a program not
/// installed) are noted in the output; only when none can be read at all is it an error.
pub fn import(netns: &Netns, options: &ImportOptions) -> Result<Imported, ImportError> {
    let mut found = Found::default();
    let mut problems = Vec::new();
    let mut any = false;
    // The nft dump also says which `ip nat`/`ip6 nat` tables are iptables-nft's: only those are
    // read through iptables-nft-save (which would otherwise also print a native `ip nat` table,
    // and its forwards would be counted twice).
    let tables = match dump_nft(netns) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!("nft: {e}"));
            None
        }
    };
    if options.from != ReadFrom::Iptables
        && let Some(tables) = &tables
    {
        any = true;
        found.extend(nft::decode(tables));
    }
    if options.from != ReadFrom::Nft {
        for v in [Variant::Legacy, Variant::Nft] {
            for family in [Family::V4, Family::V6] {
                let source = format!(
                    "{}-{}",
                    family.tool(),
                    if v == Variant::Legacy { "legacy" } else { "nft" }
                );
                if v == Variant::Nft
                    && let Some(tables) = &tables
                {
                    let fam = if family == Family::V4 {
                        portmap_netlink::Family::Ipv4
                    } else {
                        portmap_netlink::Family::Ipv6
                    };
                    let nat = tables
                        .iter()
                        .find(|t| t.table.family == fam && t.table.name == "nat");
                    match nat.map(classify) {
                        Some(TableKind::IptablesNft) => {}
                        Some(_) => {
                            any = true;
                            found.read.push(format!(
                                "{source}: table {} nat is native nft (read as nft)",
                                fam.as_str()
                            ));
                            continue;
                        }
                        None => {
                            any = true;
                            found.read.push(format!("{source}: no nat table"));
                            continue;
                        }
                    }
                }
                match save(netns, family, v) {
                    Ok(text) => match portmap_iptables::save::parse(&text) {
                        Ok(dump) => {
                            any = true;
                            found.extend(iptables::decode(&source, family == Family::V6, &dump));
                        }
                        Err(e) => problems.push(format!(
                            "{source}-save printed line {} that portmap cannot read: {}",
                            e.line, e.what
                        )),
                    },
                    Err(e) => problems.push(e),
                }
            }
        }
    }
    if !any {
        let permission = problems.iter().any(|p| {
            p.contains("CAP_NET_ADMIN") || p.contains("Permission denied") || p.contains("must be root")
        });
        return Err(ImportError::NothingRead { problems, permission });
    }
    for p in problems {
        found.read.push(format!("not read: {p}"));
    }
    Ok(convert(found, Some(&options.wan)))
}
