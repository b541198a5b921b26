//! EC2 as the world's instances see it: each instance a process with its own root
//! (`instances`) and its own IMDSv2 endpoint (`imds`).

pub mod imds;
pub mod instances;
