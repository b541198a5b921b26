//! The Auto Scaling half of the testbed's AWS world: `model` holds the rules, `api` speaks
//! them over awsQuery.

pub mod api;
pub mod model;
