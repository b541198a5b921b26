//! The demo on the Terraform module's own inputs (`--module-vars`): the fleet the module
//! would make from `tests/fleets/module.tfvars.json` (its defaults for the rest) runs a
//! short workload cleanly, warm pool included.

mod common;

use common::DemoRun;
use std::path::Path;

/// Two bursts of 6, the first once the warm pool has hibernated (a new instance boots for
/// 40 s, then passes its hooks and hibernates), so that queued jobs resume warm instances:
/// the webhook scales out the moment a job is queued. On the module's inputs `vars`.
fn two_bursts(vars: &Path) -> DemoRun {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let jobs = dir.path().join("jobs.csv");
    let mut csv = String::from("queued_at,duration,labels\n");
    for at in [120, 600] {
        for i in 0..6 {
            csv.push_str(&format!("{},{},linux\n", at + i, 60 + 10 * i));
        }
    }
    std::fs::write(&jobs, csv).expect("the workload");
    DemoRun::run(&[
        "--seed".as_ref(),
        "3".as_ref(),
        "--time-scale".as_ref(),
        "20".as_ref(),
        "--workload".as_ref(),
        jobs.as_os_str(),
        "--module-vars".as_ref(),
        vars.as_os_str(),
    ])
}

fn module_vars() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fleets/module.tfvars.json")
}

#[test]
fn the_modules_inputs_make_a_fleet_that_runs_its_jobs_and_leaves_nothing() {
    let run = two_bursts(&module_vars());
    let (stdout, text) = (&run.stdout, &run.text);
    // The module's inputs, not the fleet file's defaults: the file's warm pool minimum,
    // and the inputs that mean nothing here named.
    assert!(
        stdout.contains(
            "fleet runners: min 1, max 6, idle target 1, persistent runners, warm pool min 2"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("module inputs that shape nothing on the testbed: ami_id, github_credential_secret, github_url, subnet_ids"),
        "{stdout}"
    );
    assert_eq!(run.n("/jobs/succeeded"), 12, "{text}");
    assert!(run.n("/instances/warm_resumes") > 0, "{text}");
    assert_eq!(run.n("/github/orphan_runners_at_end"), 0, "{text}");
    assert_eq!(run.n("/aws/leaked_secrets_at_end"), 0, "{text}");
    assert_eq!(run.n("/aws/pending_hooks_at_end"), 0, "{text}");
    // Protection on at a job's start and off after its linger, at most: never asked twice
    // (three a job, as an agent that protected again each time it heard of its job would,
    // is over). The world counts attempts: on a loaded machine an SDK retry after a slow
    // answer counts twice (25 calls for these 12 jobs were seen once), hence the slack.
    let per_job = run.report["aws"]["protection_calls_per_job"].as_f64();
    assert!(per_job.is_some_and(|n| n > 0.0 && n <= 2.5), "{text}");
    assert!(run.status.success(), "exit {:?}:\n{stdout}", run.status);
}

#[test]
fn with_the_runner_table_no_job_asks_auto_scaling_and_scale_ins_take_idle_runners() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let vars = dir.path().join("module.tfvars.json");
    let mut inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(module_vars()).expect("the inputs"))
            .expect("JSON");
    inputs["use_runner_table"] = true.into();
    std::fs::write(&vars, inputs.to_string()).expect("the inputs");
    let run = two_bursts(&vars);
    let (stdout, text) = (&run.stdout, &run.text);
    assert_eq!(run.n("/jobs/succeeded"), 12, "{text}");
    assert_eq!(run.n("/jobs/killed"), 0, "{text}");
    assert!(run.n("/instances/warm_resumes") > 0, "{text}");
    // The agents recorded every job in the table: not one SetInstanceProtection.
    assert_eq!(
        run.report["aws"]["protection_calls_per_job"].as_f64(),
        Some(0.0),
        "{text}"
    );
    // The scale-ins went through the function, and took only idle runners: none killed.
    assert!(run.n("/scaling/scale_ins") > 0, "{text}");
    assert!(run.n("/scaling/termination_policy_asks") > 0, "{text}");
    assert_eq!(run.n("/github/orphan_runners_at_end"), 0, "{text}");
    assert_eq!(run.n("/aws/leaked_secrets_at_end"), 0, "{text}");
    assert_eq!(run.n("/aws/pending_hooks_at_end"), 0, "{text}");
    assert!(run.status.success(), "exit {:?}:\n{stdout}", run.status);
}
