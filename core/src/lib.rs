//! Shared by the warmfleet agent, the control-plane Lambdas and the testbed: the names of
//! everything (`naming`), the ports the domain talks through (`ports`), and the GitHub
//! client (`github`).

pub mod github;
pub mod naming;
pub mod ports;
