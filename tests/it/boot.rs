//! The boot apply when an interface does not exist yet (`ppp0` of a PPP link, a USB modem): apply
//! succeeds with one warning line, and once the interface appears the forwards work through it
//! without another apply — nft matches `iifname` and iptables `-i` by name at packet time, so
//! nothing needs repairing. Each test builds its own client / router / LAN namespaces.

use portmap_testkit::{CLIENT, OTHER_CLIENT, WAN};

const YAML: &str = "wan: { interfaces: [ppp0] }\nlan: { interfaces: [lan0] }\nmasquerade: false\nhairpin: false\nmappings:\n  - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n";

every_backend! {
fn a_wan_interface_that_appears_after_the_apply_carries_the_forwards(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    // At boot the WAN link is not there yet: the lab's wan0 (and its peer in the client) goes.
    t.router.ip(&["link", "del", "wan0"]);
    let run = t.apply(YAML);
    run.success();
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("ppp0"))
        .collect();
    assert!(
        !warnings.is_empty()
            && warnings.iter().all(|l| l.contains("wan interface ppp0 does not exist (yet)")),
        "{run}"
    );
    t.plan_json().expect_code(0);

    // The interface appears: a new veth named ppp0, to the client, with the router's address.
    t.router.ip_batch(&format!(
        "link add ppp0 type veth peer name eth0 netns {client}\naddr add {WAN}/24 dev ppp0\nlink set ppp0 up\n",
        client = t.client.name()
    ));
    t.client.ip_batch(&format!(
        "addr add {CLIENT}/24 dev eth0\naddr add {OTHER_CLIENT}/24 dev eth0\nlink set eth0 up\n"
    ));
    // No apply in between: the rules name the interface, not its index.
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.plan_json().expect_code(0);
}
}
