//! The testbed's AWS world: the services the real aws-sdk clients call, served on one port.

pub mod autoscaling;
