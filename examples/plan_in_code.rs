//! Build a portmap configuration in code and print its plan — what a tool embedding portmap does.
//!
//! `cargo run --example plan_in_code` plans against an empty kernel (no privileges needed).
//! `sudo cargo run --example plan_in_code -- --netns NAME` plans against that network namespace's
//! live ruleset instead (read only: this example never applies).

use portmap::{
    BackendKind, Config, InterfaceList, MappingConfig, Netns, Observed, Protocol, Session, plan, render_plan,
    validate,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.wan = InterfaceList::new(["wan0"]);
    config.lan = InterfaceList::new(["lan0"]);

    let mut web = MappingConfig::new("web", 8080, "192.168.1.66");
    web.to_port = Some(80.into());
    web.description = Some("web server".to_owned());
    config.mappings.push(web);

    let mut game = MappingConfig::new("game", "27015-27030", "192.168.1.70");
    game.protocol = Protocol::Udp;
    config.mappings.push(game);

    let mut ssh = MappingConfig::new("ssh", 2222, "192.168.1.10");
    ssh.to_port = Some(22.into());
    ssh.allow_from = vec!["203.0.113.0/24".to_owned()];
    config.mappings.push(ssh);

    // Validation gives the same errors the YAML loader would, naming the field (no positions).
    let model = validate(&config)?;

    let args: Vec<String> = std::env::args().collect();
    let observed = match args.iter().position(|a| a == "--netns") {
        Some(i) => {
            let name = args.get(i + 1).ok_or("--netns needs a namespace name")?;
            let mut session = Session::open(
                BackendKind::Nft,
                &Netns::Named(name.clone()),
                portmap::DEFAULT_TABLE,
            )?;
            session.observe()?
        }
        None => Observed::missing("nft", "inet portmap", None),
    };

    let plan = plan(&model, &observed);
    print!("{}", render_plan(&plan, false));
    Ok(())
}
