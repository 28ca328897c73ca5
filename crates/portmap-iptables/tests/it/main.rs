//! The iptables backend's integration tests, one binary: the router behaviour through real
//! connections (`router`), and the trust promises (`trust`), both variants, in namespaces the kit
//! creates and removes.

#[macro_use]
mod kit;
mod router;
mod trust;
