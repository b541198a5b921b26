//! The demo on the Terraform module's own inputs (`--module-vars`): the fleet the module
//! would make from `tests/fleets/module.tfvars.json` (its defaults for the rest) runs a
//! short workload cleanly, warm pool included.

mod common;

use common::DemoRun;
use std::path::Path;

#[test]
fn the_modules_inputs_make_a_fleet_that_runs_its_jobs_and_leaves_nothing() {
    let vars = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleets/module.tfvars.json");
    let run = DemoRun::run(&[
        "--seed".as_ref(),
        "3".as_ref(),
        "--time-scale".as_ref(),
        "20".as_ref(),
        "--jobs".as_ref(),
        "12".as_ref(),
        "--module-vars".as_ref(),
        vars.as_os_str(),
    ]);
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
    assert!(run.status.success(), "exit {:?}:\n{stdout}", run.status);
}
