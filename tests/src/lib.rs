//! The warmfleet testbed: the local world warmfleet runs in without AWS or GitHub.
//!
//! - `github`: a stateful fake of GitHub's REST API (and the runner protocol of the fake
//!   runner), with test controls, fault injection and a request log.
//! - `runner`: a fake GitHub Actions runner with the real one's layout, flags and exit codes.
//! - `agent_setup`: how an instance runs the real agent.
//! - `bench`, `bench_agent`, `bench_scale`: benchmarks of the Lambdas, the agent, and the
//!   control plane at fleet scale.
//! - `world`: all of it in one process, with the Lambdas (the demo's and benchmarks' world).
//! - `demo`: the README's main job, run on these parts.

pub mod agent_setup;
pub mod aws;
pub mod bench;
pub mod bench_agent;
pub mod bench_scale;
pub mod bench_webhook;
pub mod demo;
pub mod github;
pub mod runner;
pub mod world;

/// A mutex's guard, poisoned or not: a panicked holder leaves state that is still the best
/// the fakes have.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves on SIGTERM or SIGINT (never, if the handlers cannot be installed).
pub async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    if let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    } else {
        std::future::pending::<()>().await;
    }
}
