//! The soak test: the README's main job, `warmfleet-testbed demo --chaos`, with 200 jobs
//! arriving over a workday (so the group scales out, then back in) while agents are killed, Lambda
//! processes crash, lifecycle events are duplicated and delayed, GitHub answers 5xx and
//! rate-limit bursts, its webhook deliveries are dropped, delayed, redelivered and forged,
//! and instances are scaled in and terminated mid-job. It must end with
//! every job succeeded, none killed, and nothing left behind: no runner, no secret, no
//! lifecycle hook waiting.

mod common;

use common::DemoRun;

#[test]
fn two_hundred_jobs_under_chaos_all_succeed_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fleet = dir.path().join("fleet.toml");
    // Up to 3 runners busy around midday, few at the start and the end: the alarms scale out
    // and back in.
    std::fs::write(
        &fleet,
        "max_size = 8\nscale_in_evaluation_periods = 2\n\
         [workload]\npattern = \"workday\"\njobs = 200\nlength = \"45m\"\njob_duration = \"20s\"\n",
    )
    .expect("the fleet file");
    // The world is kept: a job that did not succeed is shown with its instance's log.
    let world = dir.path().join("world");
    let run = DemoRun::run(&[
        "--keep".as_ref(),
        world.as_os_str(),
        "--chaos".as_ref(),
        "--seed".as_ref(),
        "11".as_ref(),
        "--time-scale".as_ref(),
        "20".as_ref(),
        "--config".as_ref(),
        fleet.as_os_str(),
    ]);
    let n = |path: &str| run.n(path);
    let (stdout, text) = (&run.stdout, &run.text);
    let context = format!(
        "report:\n{text}\nsteps:\n{}\nlog tail:\n{}\n{}",
        steps(stdout),
        tail(stdout, 40),
        unsuccessful(&world)
    );
    assert_eq!(n("/jobs/total"), 200, "{context}");
    assert_eq!(n("/jobs/succeeded"), 200, "{context}");
    assert_eq!(n("/jobs/killed"), 0, "{context}");
    assert_eq!(n("/github/orphan_runners_at_end"), 0, "{context}");
    assert_eq!(n("/aws/leaked_secrets_at_end"), 0, "{context}");
    assert_eq!(n("/aws/pending_hooks_at_end"), 0, "{context}");
    // Out by the webhook receiver (queued jobs) or the idle-runner alarm, back in by the
    // alarm.
    assert!(
        n("/scaling/scale_outs") + n("/scaling/webhook_scale_outs") > 0
            && n("/scaling/scale_ins") > 0,
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
    // Webhook chaos happened, and no forgery got past the signature check.
    for kind in ["dropped", "delayed", "duplicated", "forged"] {
        assert!(
            n(&format!("/webhook/{kind}")) > 0,
            "no {kind} delivery: {context}"
        );
    }
    assert_eq!(n("/webhook/forged_accepted"), 0, "{context}");
    // Each forgery was refused (4xx), unless the chaos had crashed the receiver as it came
    // (then it failed, as a genuine delivery would; at most one per crash).
    assert!(
        n("/webhook/rejected") >= n("/webhook/forged").saturating_sub(n("/webhook/forged_failed")),
        "{context}"
    );
    assert!(
        n("/webhook/forged_failed") <= n("/chaos/lambdas_crashed"),
        "{context}"
    );
    assert!(run.status.success(), "exit {:?}: {context}", run.status);
}

/// Every job that did not succeed, with the end of its instance's log (the agent and the
/// runner) and what the deregistration Lambda did with that instance: what a failure needs
/// to be understood from CI's output alone.
fn unsuccessful(world: &std::path::Path) -> String {
    let Ok(text) = std::fs::read_to_string(world.join("jobs.json")) else {
        return "(no jobs.json kept)".into();
    };
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    let lambda =
        std::fs::read_to_string(world.join("lambda/deregistration.log")).unwrap_or_default();
    let mut out = String::new();
    for job in jobs.iter().filter(|j| j["outcome"] != "succeeded") {
        out.push_str(&format!("\n==> job not succeeded: {job}\n"));
        let Some(instance) = job["runner_name"].as_str() else {
            continue;
        };
        let console = world.join("instances").join(instance).join("console.log");
        let log = std::fs::read_to_string(&console).unwrap_or_default();
        out.push_str(&format!(
            "--- {} (tail)\n{}\n",
            console.display(),
            tail(&log, 60)
        ));
        let about: Vec<&str> = lambda.lines().filter(|l| l.contains(instance)).collect();
        out.push_str(&format!(
            "--- deregistration on {instance}\n{}\n",
            about.join("\n")
        ));
    }
    out
}

/// The demo's own lines (`==> ...`): what it did, and what it found left at the end.
fn steps(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("==>")).collect();
    lines.join("\n")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
