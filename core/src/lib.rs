//! Shared by the warmfleet agent, the control-plane Lambdas and the testbed: the names of
//! everything (`naming`), the ports the domain talks through (`ports`), their aws-sdk
//! adapters (`aws`) and the GitHub client (`github`).

pub mod aws;
pub mod github;
pub mod instance_secret;
pub mod naming;
pub mod ports;
