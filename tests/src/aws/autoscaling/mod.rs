//! The Auto Scaling half of the testbed's AWS world: `model` holds the rules, `policy` the
//! scaling policies, `refresh` instance refreshes, `termination` custom termination policies, `api` speaks them over awsQuery.

pub mod api;
pub mod model;
pub mod policy;
pub mod refresh;
pub mod termination;
