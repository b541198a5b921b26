//! Shared by the warmfleet agent, the control-plane Lambdas and the testbed: the names of
//! everything (`naming`), the ports the domain talks through (`ports`), their aws-sdk
//! adapters (`aws`), the GitHub client (`github`), the IMDSv2 client (`imds`), and how a
//! failing AWS call is tried again (`patience`).

pub mod aws;
pub mod github;
pub mod imds;
pub mod instance_secret;
pub mod naming;
pub mod patience;
pub mod ports;
