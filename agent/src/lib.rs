//! warmfleet-agent: the systemd service on every runner instance. `machine` is its state
//! machine (pure), `driver` performs its actions; `runner` runs the actions runner's
//! programs and `listener_log` follows the listener's output; `control` carries the
//! commands (`drain`, `status`, `hook`, `sleep-hook`) to the running service, `record`
//! keeps its state across restarts, `config` reads its files, `cli` is the command line,
//! `imds_guard` keeps the runner user away from IMDS, `error` says what went wrong.

pub mod cli;
pub mod config;
pub mod control;
pub mod driver;
pub mod error;
pub mod imds_guard;
pub mod listener_log;
pub mod machine;
pub mod record;
pub mod runner;
