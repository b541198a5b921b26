//! warmfleet-agent: the systemd service on every runner instance. So far: its layered
//! configuration (`config`). The state machine, its driver and the commands follow (issue 6).

pub mod config;
