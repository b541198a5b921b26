//! The soak test: the README's main job, `warmfleet-testbed demo --chaos`, with 200 jobs
//! arriving over a workday (so the alarms scale out, then back in) while agents are killed, Lambda
//! processes crash, lifecycle events are duplicated and delayed, GitHub answers 5xx and
//! rate-limit bursts, and instances are scaled in and terminated mid-job. It must end with
//! every job succeeded, none killed, and nothing left behind: no runner, no secret, no
//! lifecycle hook waiting.

mod common;

use common::TESTBED;
use serde_json::Value;
use std::process::Command;

#[test]
fn two_hundred_jobs_under_chaos_all_succeed_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = dir.path().join("report.json");
    let fleet = dir.path().join("fleet.toml");
    // Up to 3 runners busy around midday, few at the start and the end: the alarms scale out
    // and back in.
    std::fs::write(
        &fleet,
        "max_size = 8\nscale_in_evaluation_periods = 2\n\
         [workload]\npattern = \"workday\"\njobs = 200\nlength = \"45m\"\njob_duration = \"20s\"\n",
    )
    .expect("the fleet file");
    let binaries = std::path::Path::new(TESTBED)
        .parent()
        .expect("the binaries' directory");
    let out = Command::new(TESTBED)
        .args([
            "demo",
            "--chaos",
            "--seed",
            "11",
            "--time-scale",
            "20",
            "--config",
        ])
        .arg(&fleet)
        .arg("--binaries")
        .arg(binaries)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("the testbed runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"));
    let r: Value = serde_json::from_str(&text).expect("the report is JSON");
    let n = |path: &str| -> u64 {
        r.pointer(path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{path} missing in {text}"))
    };
    let context = format!("report:\n{text}\nlog tail:\n{}", tail(&stdout, 40));
    assert_eq!(n("/jobs/total"), 200, "{context}");
    assert_eq!(n("/jobs/succeeded"), 200, "{context}");
    assert_eq!(n("/jobs/killed"), 0, "{context}");
    assert_eq!(n("/github/orphan_runners_at_end"), 0, "{context}");
    assert_eq!(n("/aws/leaked_secrets_at_end"), 0, "{context}");
    assert_eq!(n("/aws/pending_hooks_at_end"), 0, "{context}");
    assert!(
        n("/scaling/scale_outs") > 0 && n("/scaling/scale_ins") > 0,
        "{context}"
    );
    assert!(n("/instances/warm_resumes") > 0, "{context}");
    // The chaos did happen.
    for kind in [
        "agents_killed",
        "busy_instances_terminated",
        "github_5xx_bursts",
    ] {
        assert!(n(&format!("/chaos/{kind}")) > 0, "no {kind}: {context}");
    }
    assert!(out.status.success(), "exit {:?}: {context}", out.status);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
