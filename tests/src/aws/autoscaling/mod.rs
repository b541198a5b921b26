//! The Auto Scaling half of the testbed's AWS world.

pub mod model;
