//! The demo with ephemeral runners, a hibernated warm pool and reuse on scale-in
//! (`tests/fleets/warm-ephemeral-1.toml`): idle JIT runners go back into the pool and come
//! out again, and every launch registers (none abandoned), every job runs, nothing is left.

mod common;

use common::DemoRun;
use std::path::Path;

#[test]
fn ephemeral_runners_reused_from_the_warm_pool_run_every_job_and_abandon_no_launch() {
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleets/warm-ephemeral-1.toml");
    let run = DemoRun::run(&[
        "--seed".as_ref(),
        "42".as_ref(),
        "--time-scale".as_ref(),
        "20".as_ref(),
        "--config".as_ref(),
        fleet.as_os_str(),
    ]);
    let (stdout, text) = (&run.stdout, &run.text);
    assert!(
        stdout.contains("ephemeral runners") && stdout.contains("warm pool"),
        "{stdout}"
    );
    assert_eq!(run.n("/jobs/succeeded"), run.n("/jobs/total"), "{text}");
    assert_eq!(run.n("/jobs/killed"), 0, "{text}");
    // Instances came back out of the pool after a scale-in, and each registered afresh.
    assert!(run.n("/instances/warm_resumes") > 0, "{text}");
    assert_eq!(run.n("/instances/abandoned"), 0, "{text}");
    assert_eq!(run.n("/github/orphan_runners_at_end"), 0, "{text}");
    assert_eq!(run.n("/aws/leaked_secrets_at_end"), 0, "{text}");
    assert_eq!(run.n("/aws/pending_hooks_at_end"), 0, "{text}");
    assert!(run.status.success(), "exit {:?}:\n{stdout}", run.status);
}
