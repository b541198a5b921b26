//! `warmfleet-testbed bench-agent`: a benchmark (not a test) of the agent on the testbed. One
//! instance cycles through a warm pool with reuse on scale-in: it launches into the pool,
//! resumes into service, is scaled in (drained, back to the pool), resumes again... Each
//! resume's split from the agent's own `bootstrap timings` log line (the wait for the
//! Lambda's credential and the runner's start are not the agent's overhead), and, while it
//! idles in service, the agent's resident memory and CPU. `make bench` runs it on the dist
//! profile's binaries; results in docs/usage/agent.md.

use crate::agent_setup::{lifecycle_hooks, AgentSetup};
use crate::world::{Spec, World, ORG};
use anyhow::{bail, Context};
use aws_sdk_autoscaling::types::{InstanceReusePolicy, WarmPoolState};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct BenchAgentArgs {
    /// Where the agent and the Lambda binaries are.
    #[arg(long, default_value = "target/dist")]
    pub binaries: PathBuf,
    /// Resumes to measure.
    #[arg(long, default_value_t = 5)]
    pub resumes: usize,
    /// How long to watch the idle agent.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// The JSON report.
    #[arg(long, default_value = "target/bench/agent.json")]
    pub out: PathBuf,
}

/// One `bootstrap timings` line of the agent's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timings {
    pub resumed: bool,
    pub total_ms: f64,
    pub credential_wait_ms: f64,
    pub runner_start_ms: f64,
    pub agent_ms: f64,
}

/// Reads the agent's `bootstrap timings` lines (tracing's `key=value` format).
pub fn parse_timings(log: &str) -> Vec<Timings> {
    log.lines()
        .filter(|l| l.contains("bootstrap timings"))
        .filter_map(|l| {
            let field = |k: &str| -> Option<&str> {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            };
            let ms = |k: &str| field(k)?.parse::<f64>().ok();
            Some(Timings {
                resumed: field("resumed")? == "true",
                total_ms: ms("total_ms")?,
                credential_wait_ms: ms("credential_wait_ms")?,
                runner_start_ms: ms("runner_start_ms")?,
                agent_ms: ms("agent_ms")?,
            })
        })
        .collect()
}

fn proc_status_kib(pid: u64, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

struct Bench {
    world: World,
    asg: aws_sdk_autoscaling::Client,
}

const GROUP: &str = "bench";

impl Bench {
    async fn instances(&self, warm: bool) -> anyhow::Result<Vec<(String, String)>> {
        let pairs = if warm {
            let out = self
                .asg
                .describe_warm_pool()
                .auto_scaling_group_name(GROUP)
                .send()
                .await?;
            out.instances()
                .iter()
                .map(|i| (i.instance_id().map(str::to_owned), i.lifecycle_state()))
                .map(|(id, s)| (id.unwrap_or_default(), s.map(|s| s.as_str().to_owned())))
                .map(|(id, s)| (id, s.unwrap_or_default()))
                .collect()
        } else {
            let out = self
                .asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(GROUP)
                .send()
                .await?;
            out.auto_scaling_groups()
                .first()
                .map(|g| {
                    g.instances()
                        .iter()
                        .map(|i| {
                            (
                                i.instance_id().unwrap_or_default().to_owned(),
                                i.lifecycle_state()
                                    .map(|s| s.as_str().to_owned())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(pairs)
    }

    /// Waits until one instance is in `state` (in the pool when `warm`); its id.
    async fn until_one(&self, warm: bool, state: &str) -> anyhow::Result<String> {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.instances(warm).await?;
            if let [(id, s)] = now.as_slice() {
                if s == state {
                    return Ok(id.clone());
                }
            }
            if Instant::now() > until {
                bail!("never one instance {state}: {now:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn desired(&self, n: i32) -> anyhow::Result<()> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(GROUP)
            .desired_capacity(n)
            .send()
            .await?;
        Ok(())
    }

    async fn root(&self, instance: &str) -> anyhow::Result<PathBuf> {
        let all: Vec<Value> = self.world.aws_control("instances").await?;
        let root = all
            .iter()
            .find(|i| i["id"] == instance)
            .and_then(|i| i["root"].as_str())
            .with_context(|| format!("no process for {instance}"))?;
        Ok(PathBuf::from(root))
    }

    /// The agent's state file in an instance.
    async fn agent_state(&self, instance: &str) -> anyhow::Result<Value> {
        let file = self
            .root(instance)
            .await?
            .join("var/lib/warmfleet/state.json");
        Ok(serde_json::from_slice(&std::fs::read(&file)?)?)
    }

    async fn until_idle(&self, instance: &str) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(30);
        while self
            .agent_state(instance)
            .await
            .ok()
            .map(|s| s["state"]["name"].clone())
            != Some(json!("idle"))
        {
            if Instant::now() > until {
                bail!("the agent of {instance} never got idle");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (make bench does)",
            path.display()
        );
    }
    Ok(std::fs::canonicalize(path)?)
}

pub async fn run(args: BenchAgentArgs) -> anyhow::Result<i32> {
    let agent = binary(&args.binaries, "warmfleet-agent")?;
    let script_dir = tempfile::tempdir()?;
    let script = script_dir.path().join("instance.sh");
    let setup_of = |github_url: String| AgentSetup {
        agent: agent.clone(),
        testbed: std::env::current_exe().unwrap_or_default(),
        packaging: AgentSetup::packaging_dir(),
        github_url,
        deployment: String::new(),
        labels: vec!["linux".into()],
        runner_table: None,
        extra_config: String::new(),
        env: String::new(),
        runner_user: None,
        supervise: false,
    };
    let mut spec = Spec::lambdas(args.binaries.clone(), &[GROUP]);
    spec.function_env.push((
        "deregistration",
        "WARMFLEET_DRAIN_COMMAND".into(),
        setup_of(String::new()).drain_command(),
    ));
    spec.lifecycle_rules = true;
    spec.instance_command = Some(format!("sh {}", script.display()));
    // Time for an instance's script to set up before its hooks fire.
    spec.boot_delay = Duration::from_secs(1);
    let world = World::start(&spec).await?;
    std::fs::write(
        &script,
        setup_of(format!("{}/{ORG}", world.github)).script(),
    )?;
    let bench = Bench {
        asg: aws_sdk_autoscaling::Client::new(&world.sdk),
        world,
    };
    let result = measure(&bench, &args).await;
    bench.world.stop().await;
    crate::bench::write_report(&args.out, &result?)?;
    Ok(0)
}

async fn measure(b: &Bench, args: &BenchAgentArgs) -> anyhow::Result<Value> {
    b.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .set_lifecycle_hook_specification_list(Some(lifecycle_hooks(&[
            "registration",
            "bootstrap",
            "deregistration",
        ])))
        .send()
        .await?;
    // Pool min 0 and group max 1: the one instance cycles between the pool and service.
    b.asg
        .put_warm_pool()
        .auto_scaling_group_name(GROUP)
        .min_size(0)
        .pool_state(WarmPoolState::Hibernated)
        .instance_reuse_policy(
            InstanceReusePolicy::builder()
                .reuse_on_scale_in(true)
                .build(),
        )
        .send()
        .await?;
    let instance = b.until_one(true, "Warmed:Hibernated").await?;
    let mut idle = json!(null);
    let mut back_in_pool_ms = vec![];
    for i in 0..args.resumes {
        eprintln!("==> resume {}", i + 1);
        b.desired(1).await?;
        b.until_one(false, "InService").await?;
        b.until_idle(&instance).await?;
        if i == 0 {
            let pid = b.agent_state(&instance).await?["agent_pid"]
                .as_u64()
                .context("no agent pid")?;
            let ticks_before = cpu_ticks(pid).context("no CPU time")?;
            tokio::time::sleep(args.idle).await;
            let ticks = cpu_ticks(pid).context("no CPU time")? - ticks_before;
            let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .unwrap_or(100) as f64;
            idle = json!({
                "seconds": args.idle.as_secs_f64(),
                "rss_kib": proc_status_kib(pid, "VmRSS:"),
                "rss_anon_kib": proc_status_kib(pid, "RssAnon:"),
                "rss_file_kib": proc_status_kib(pid, "RssFile:"),
                "peak_rss_kib": proc_status_kib(pid, "VmHWM:"),
                "cpu_percent": ticks as f64 / hz / args.idle.as_secs_f64() * 100.0,
            });
        }
        // Scale-in of an idle runner: the Lambda's drain over SSM, the agent's drain, the
        // way back into the pool.
        let scale_in = Instant::now();
        b.desired(0).await?;
        b.until_one(true, "Warmed:Hibernated").await?;
        back_in_pool_ms.push(scale_in.elapsed().as_secs_f64() * 1000.0);
    }
    let log = std::fs::read_to_string(b.root(&instance).await?.join("console.log"))?;
    let resumes: Vec<Timings> = parse_timings(&log)
        .into_iter()
        .filter(|t| t.resumed)
        .collect();
    let mut agent_ms: Vec<f64> = resumes.iter().map(|t| t.agent_ms).collect();
    agent_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "agent": args.binaries.join("warmfleet-agent"),
        "agent_bytes": std::fs::metadata(args.binaries.join("warmfleet-agent")).map(|m| m.len()).ok(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "idle": idle,
        "resumes": resumes,
        "agent_ms_median": agent_ms.get(agent_ms.len() / 2),
        "agent_ms_max": agent_ms.last(),
        "scale_in_to_hibernated_ms": back_in_pool_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agents_timing_lines() {
        let log = "2026-11-28T09:00:00Z  INFO starting state=\"identifying\"\n\
            2026-11-28T09:00:01Z  INFO bootstrap timings instance_id=\"i-1\" resumed=true \
            total_ms=512.5 credential_wait_ms=250.25 runner_start_ms=200 agent_ms=62.25\n";
        assert_eq!(
            parse_timings(log),
            [Timings {
                resumed: true,
                total_ms: 512.5,
                credential_wait_ms: 250.25,
                runner_start_ms: 200.0,
                agent_ms: 62.25
            }]
        );
    }
}
