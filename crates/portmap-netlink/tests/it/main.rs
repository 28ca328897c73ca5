//! portmap-netlink's kernel tests, as one test binary: `nf_tables` batches and dumps (`kernel`),
//! conntrack (`conntrack`), interfaces (`link`), route lookups (`route`), notifications and table
//! ownership (`monitor`) and
//! sysctls (`sysctl`) against the real kernel, each
//! test in network namespaces of its own made by the test kit (`portmap-testkit`), which removes them
//! even on panic. They need root and fail without it (unless `PORTMAP_TEST_ALLOW_SKIP=1` outside
//! CI); they never touch the host namespace's ruleset.

mod conntrack;
mod kernel;
mod link;
mod monitor;
mod reference;
mod route;
mod sysctl;

use portmap_netlink::Socket;

/// A kit namespace as this crate names it. The kit cannot know portmap-netlink's types: as a
/// dependency of the kit, portmap-netlink would be compiled a second time for these tests, with
/// types that do not match this crate's.
trait NetlinkNetns {
    /// The namespace, by name.
    fn netns(&self) -> portmap_netlink::Netns;
    /// A netfilter socket inside the namespace.
    fn socket(&self) -> Socket;
}

impl NetlinkNetns for portmap_testkit::Netns {
    fn netns(&self) -> portmap_netlink::Netns {
        portmap_netlink::Netns::Named(self.name().to_owned())
    }

    fn socket(&self) -> Socket {
        Socket::open(&self.netns()).expect("open socket in test netns")
    }
}
