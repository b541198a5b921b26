//! A rollout while jobs run: the demo applies launch template version 2 mid-workload and the
//! module's instance refresh (min 100 %, max 110 %, skip matching, protected instances
//! refreshed through the terminate hook) replaces every instance in service, busy ones
//! included, then the warm pool: every job succeeds, none is killed, no instance of
//! version 1 is left, and nothing is left behind. Persistent and ephemeral runners, both with
//! the hibernated warm pool and reuse on scale-in.

mod common;

use common::DemoRun;

fn rollout(mode: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fleet = dir.path().join("fleet.toml");
    // Jobs from the start to 12 minutes; the rollout at 4 minutes, with jobs running.
    std::fs::write(
        &fleet,
        format!(
            "runner_mode = \"{mode}\"\n[refresh]\nat = \"4m\"\n\
             [workload]\npattern = \"steady\"\njobs = 24\nlength = \"12m\"\njob_duration = \"2m\"\n"
        ),
    )
    .expect("the fleet file");
    let run = DemoRun::run(&[
        "--seed".as_ref(),
        "42".as_ref(),
        "--time-scale".as_ref(),
        "20".as_ref(),
        "--config".as_ref(),
        fleet.as_os_str(),
    ]);
    let (stdout, text) = (&run.stdout, &run.text);
    let context = format!("{mode}: report:\n{text}\nlog:\n{stdout}");
    assert_eq!(
        run.report
            .pointer("/refresh/status")
            .and_then(|s| s.as_str()),
        Some("Successful"),
        "{context}"
    );
    assert!(run.n("/refresh/instances_to_update") > 0, "{context}");
    assert_eq!(run.n("/refresh/old_instances_at_end"), 0, "{context}");
    // Jobs ran while it replaced the instances under them.
    assert!(run.n("/refresh/jobs_running_at_start") > 0, "{context}");
    assert!(run.n("/refresh/jobs_during") > 0, "{context}");
    assert_eq!(run.n("/jobs/succeeded"), run.n("/jobs/total"), "{context}");
    assert_eq!(run.n("/jobs/killed"), 0, "{context}");
    assert_eq!(run.n("/github/orphan_runners_at_end"), 0, "{context}");
    assert_eq!(run.n("/aws/leaked_secrets_at_end"), 0, "{context}");
    assert_eq!(run.n("/aws/pending_hooks_at_end"), 0, "{context}");
    assert!(run.status.success(), "exit {:?}: {context}", run.status);
}

/// One after the other: two demos at once would share two cores.
#[test]
fn a_refresh_replaces_every_runner_while_jobs_run_and_kills_none() {
    for mode in ["persistent", "ephemeral"] {
        rollout(mode);
    }
}
