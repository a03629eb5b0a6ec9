//! The end-to-end suite in one binary: the real daemon, real SIPp,
//! Kamailio and network namespaces (each test still runs in a process of
//! its own under nextest, and in its own addresses or namespace).

mod check_config;
mod cluster;
mod dns;
mod drain;
mod edge;
mod harness;
mod inspect_cli;
mod media;
mod ng;
mod operations;
mod packaging;
mod restart;
mod scenarios_selfcheck;
mod signaling;
mod srtp;
mod tls;
mod xdp_lab;
