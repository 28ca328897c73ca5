//! What portmap's table holds, read back as the configuration that builds it again: the snapshot
//! `apply --confirm` keeps so that a rollback restores the table exactly (settings and every
//! mapping), through the same plan and apply as any configuration.
//!
//! Pure: it turns an [`Observed`] into a [`Model`] and checks that planning that model against the
//! same observation changes nothing — the definition of "exactly". A table that no configuration
//! builds (damaged structure, a damaged mapping, forwards edited by hand into several runs) is not
//! restorable, and the reasons say why. This module does no I/O.

use std::fmt;

use crate::config::Config;
use crate::model::{Mapping, Model, Observed, TableState};
use crate::plan::{fold_forwards, plan};
use crate::validate::validate;

/// Why what the kernel holds cannot be kept as a configuration that restores it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRestorable {
    /// One sentence per finding (e.g. "mapping web is damaged: …").
    pub reasons: Vec<String>,
}

impl fmt::Display for NotRestorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("what portmap's table holds now is not something a configuration can build again")?;
        for reason in &self.reasons {
            write!(f, "\n  - {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NotRestorable {}

/// The configuration (as a validated [`Model`]) that rebuilds what `observed` holds: `None` when
/// the table does not exist (restoring that is removing the table). The model plans to no change
/// at all against `observed`.
pub fn restorable(observed: &Observed) -> Result<Option<Model>, NotRestorable> {
    let mut reasons = Vec::new();
    match &observed.state {
        TableState::Missing => return Ok(None),
        TableState::Intact => {}
        TableState::Damaged { reasons: found } => {
            reasons.extend(found.iter().map(|r| format!("the table is damaged: {r}")));
        }
    }
    let mut mappings = Vec::with_capacity(observed.mappings.len());
    // What the kernel keeps of an expired mapping forwards nothing and says too little to be
    // written as a mapping: it is left out (a rollback removes it, changing no forward).
    let leftover =
        |m: &crate::model::ObservedMapping| m.forwards.is_empty() && m.is_expired(observed.observed_at);
    for m in &observed.mappings {
        if leftover(m) {
            continue;
        }
        if m.is_damaged() {
            reasons.push(format!("mapping {} is damaged: {}", m.name, m.damage.join("; ")));
            continue;
        }
        let Some((listen, plain)) = crate::model::split_listen(&m.forwards) else {
            reasons.push(format!(
                "mapping {} does not forward the same ports on each of its listen addresses",
                m.name
            ));
            continue;
        };
        let runs = fold_forwards(&plain);
        let [run] = runs.as_slice() else {
            reasons.push(format!(
                "mapping {} holds {} runs of forwards ({}), which no single mapping makes",
                m.name,
                runs.len(),
                crate::plan::describe_runs(&runs)
            ));
            continue;
        };
        mappings.push(Mapping {
            name: m.name.clone(),
            protocol: run.protocol,
            port: run.port,
            to: run.to,
            to_port: run.to_port,
            allow_from: m.allow_from.clone(),
            allow_sources: m.allow_sources.clone(),
            allow_inline: m.allow_inline.clone(),
            listen,
            description: m.description.clone(),
            log: m.log,
            limit: m.limit,
            expires: m.expires,
        });
    }
    if !reasons.is_empty() {
        return Err(NotRestorable { reasons });
    }
    let model = Model {
        settings: observed.settings.clone(),
        sources: observed.sources.clone().unwrap_or_default(),
        mappings,
        disabled: Vec::new(),
    };
    // Through validation, as a configuration file would go: canonical form, every rule checked.
    let model = validate(&Config::from(&model)).map_err(|errors| NotRestorable {
        reasons: errors.to_string().lines().map(str::to_owned).collect(),
    })?;
    let mut check = plan(&model, observed);
    check.changes.retain(|c| match c {
        crate::plan::Change::Delete { before, .. } => !leftover(before),
        _ => true,
    });
    if check.changes_kernel() {
        return Err(NotRestorable {
            reasons: vec![format!(
                "its configuration would still change the table:\n{}",
                crate::render::render_plan(&check, false)
            )],
        });
    }
    Ok(Some(model))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::load_str;
    use crate::model::{Forward, Transport};

    fn model(yaml: &str) -> Model {
        load_str(yaml, "test").unwrap()
    }

    const CONFIG: &str = "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nmasquerade: true\nhairpin: false\n\
        mappings:\n\
        \x20 - { name: web, port: 8080, to: 192.168.1.66, to_port: 80, description: \"the web\" }\n\
        \x20 - { name: games, protocol: both, port: \"6000-6002\", to: 192.168.1.70, to_port: \"7000-7002\" }\n\
        \x20 - { name: ssh, port: 2222, to: \"2001:db8:2::66\", to_port: 22, allow_from: [2001:db8:7::/48] }\n";

    #[test]
    fn an_intact_table_comes_back_as_the_configuration_that_built_it() {
        let want = model(CONFIG);
        let observed = Observed::from_model(&want, "nft", "inet portmap", Some(7));
        let got = restorable(&observed).unwrap().unwrap();
        assert_eq!(got.settings, want.settings);
        let mut a = got.mappings.clone();
        let mut b = want.mappings.clone();
        a.sort_by(|x, y| x.name.cmp(&y.name));
        b.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(a, b);
        assert!(plan(&got, &observed).is_empty());
    }

    #[test]
    fn named_source_lists_come_back_with_the_mappings_using_them() {
        let want = model(
            "wan: { interfaces: [wan0] }\nsources: { office: [198.51.100.0/24, \"2001:db8:1::/48\"] }\nmappings:\n\
             \x20 - { name: ssh, port: 22, to: 192.168.1.2, allow_from: [office, 192.0.2.9] }\n",
        );
        let observed = Observed::from_model(&want, "nft", "inet portmap", Some(7));
        let got = restorable(&observed).unwrap().unwrap();
        assert_eq!(got.sources, want.sources);
        assert_eq!(got.mappings, want.mappings);
        assert!(plan(&got, &observed).is_empty());
    }

    #[test]
    fn a_missing_table_is_no_table() {
        let observed = Observed::missing("nft", "inet portmap", Some(1));
        assert_eq!(restorable(&observed).unwrap(), None);
    }

    #[test]
    fn an_empty_table_keeps_its_settings() {
        let want = model("wan: { interfaces: [eth0, ppp0] }\nhairpin: true\nmappings: []\n");
        let observed = Observed::from_model(&want, "nft", "inet portmap", Some(3));
        let got = restorable(&observed).unwrap().unwrap();
        assert!(got.mappings.is_empty());
        assert_eq!(got.settings.wan_interfaces, ["eth0", "ppp0"]);
        assert!(got.settings.hairpin);
    }

    #[test]
    fn damage_and_hand_edits_are_refused_with_reasons() {
        let want = model(CONFIG);
        let mut observed = Observed::from_model(&want, "nft", "inet portmap", Some(7));
        observed.state = TableState::Damaged {
            reasons: vec!["chain prerouting is missing".into()],
        };
        let web = observed.mappings.iter_mut().find(|m| m.name == "web").unwrap();
        web.forwards.push(Forward {
            transport: Transport::Tcp,
            port: 9999,
            to: "192.168.1.9".parse().unwrap(),
            to_port: 99,
            listen: None,
        });
        let ssh = observed.mappings.iter_mut().find(|m| m.name == "ssh").unwrap();
        ssh.damage
            .push("tcp/2222 is not guarded by the allow-list: open to every source".into());
        let err = restorable(&observed).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.reasons.len(), 3, "{text}");
        assert!(text.contains("chain prerouting is missing"), "{text}");
        assert!(text.contains("mapping web holds 2 runs"), "{text}");
        assert!(text.contains("mapping ssh is damaged"), "{text}");
    }

    #[test]
    fn an_expiring_mapping_keeps_its_expiry_and_an_expired_one_is_left_out() {
        let m = model(
            "wan: { interfaces: [wan0] }\nmappings:\n\
             \x20 - { name: web, port: 8080, to: 192.168.1.66, expires: 2026-12-24T00:00:00Z }\n\
             \x20 - { name: ssh, port: 2222, to: 192.168.1.25 }\n",
        );
        let christmas = m.mappings[0].expires.unwrap();
        let mut observed = Observed::from_model(&m, "nft", "inet portmap", Some(1));
        observed.observed_at = Some(crate::UtcTime::from_unix_seconds(christmas.unix_seconds() - 60));
        let back = restorable(&observed).unwrap().unwrap();
        let web = back.mappings.iter().find(|x| x.name == "web").unwrap();
        assert_eq!(web, &m.mappings[0]);
        // After the moment, the kernel kept only its counters: left out, and still restorable.
        observed.observed_at = Some(crate::UtcTime::from_unix_seconds(christmas.unix_seconds() + 60));
        observed
            .mappings
            .iter_mut()
            .find(|o| o.name == "web")
            .unwrap()
            .forwards
            .clear();
        let back = restorable(&observed).unwrap().unwrap();
        assert_eq!(back.mappings.len(), 1);
        assert_eq!(back.mappings[0].name, "ssh");
    }
}
