//! `Runner.Worker`: runs one job (read as JSON on stdin) between the job hooks named by
//! `ACTIONS_RUNNER_HOOK_JOB_STARTED` and `ACTIONS_RUNNER_HOOK_JOB_COMPLETED`. Exits 0 when
//! the job succeeded.

use crate::github::state::JobRec;
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub const HOOK_STARTED: &str = "ACTIONS_RUNNER_HOOK_JOB_STARTED";
pub const HOOK_COMPLETED: &str = "ACTIONS_RUNNER_HOOK_JOB_COMPLETED";

/// Runs a hook script as the real runner does (`bash -e` for `.sh`, else directly).
async fn hook(var: &str, job: &JobRec, root: &Path) -> anyhow::Result<bool> {
    let Some(script) = std::env::var_os(var).filter(|s| !s.is_empty()) else {
        return Ok(true);
    };
    println!("A job hook has been configured by the self-hosted runner administrator ({var})");
    let script_path = Path::new(&script);
    let mut cmd = if script_path.extension().is_some_and(|e| e == "sh") {
        let mut c = tokio::process::Command::new("bash");
        c.arg("-e").arg(script_path);
        c
    } else {
        tokio::process::Command::new(script_path)
    };
    let status = cmd
        .env("GITHUB_JOB", &job.name)
        .env("GITHUB_RUN_ID", job.id.to_string())
        .env("RUNNER_WORKSPACE", root.join("_work"))
        .status()
        .await
        .with_context(|| format!("running the hook {}", script_path.display()))?;
    Ok(status.success())
}

pub async fn work(root: &Path) -> anyhow::Result<i32> {
    let mut input = Vec::new();
    tokio::io::stdin()
        .read_to_end(&mut input)
        .await
        .context("reading the job")?;
    let job: JobRec = serde_json::from_slice(&input).context("parsing the job")?;
    let mut ok = hook(HOOK_STARTED, &job, root).await?;
    if ok {
        tokio::time::sleep(Duration::from_secs_f64(job.duration_secs)).await;
        ok = !job.fail;
    }
    let completed = hook(HOOK_COMPLETED, &job, root).await?;
    Ok(if ok && completed { 0 } else { 1 })
}
