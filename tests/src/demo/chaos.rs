//! `--chaos`: while the workload runs, about every 30 world seconds one of these happens,
//! picked at random (seeded; the scale-in half as often as the others): an agent is killed (its supervisor restarts it, as systemd's
//! `Restart=on-failure` would); a Lambda process is killed mid-invocation (EventBridge's
//! retry runs it again); GitHub answers a burst of 5xx, or of rate-limit refusals; the
//! group is scaled in by one while jobs run; an instance whose runner is busy is terminated.
//! From the start, lifecycle events are delivered twice (one in five) and late (up to 30
//! world seconds), as EventBridge may; and GitHub's webhook deliveries are dropped, held
//! back 30-90 world seconds (so later ones overtake them), redelivered, and accompanied by
//! forgeries signed with another secret (one in ten each).

use super::Demo;
use crate::world::ORG;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

pub struct Chaos {
    rng: rand::rngs::StdRng,
    next: Option<Instant>,
    /// What was done, by kind.
    pub counts: BTreeMap<&'static str, u32>,
}

impl Chaos {
    pub fn new(seed: u64) -> Chaos {
        Chaos {
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0xC4A0_5C4A_05C4_A05C),
            next: None,
            counts: BTreeMap::new(),
        }
    }

    /// Acts when it is time; says what it did.
    pub async fn act(&mut self, demo: &Demo) -> anyhow::Result<Option<String>> {
        let Some(next) = self.next else {
            demo.world
                .http
                .put(format!("{}/_testbed/aws/faults/events", demo.world.aws))
                .json(&json!({"duplicate": 0.2, "max_delay_seconds": 30.0}))
                .send()
                .await?
                .error_for_status()?;
            self.next = Some(Instant::now() + self.interval(demo));
            let mut said =
                "chaos: lifecycle events duplicated (1 in 5) and delayed (up to 30 s)".to_owned();
            if demo.fleet.webhook {
                let ms = |world: f64| demo.real(world).as_millis() as u64;
                demo.world
                    .http
                    .put(format!("{}/_testbed/webhooks/faults", demo.world.github))
                    .json(&json!({
                        "drop": 0.1, "delay": 0.1, "delay_ms": [ms(30.0), ms(90.0)],
                        "duplicate": 0.1, "forge": 0.1,
                    }))
                    .send()
                    .await?
                    .error_for_status()?;
                said.push_str(
                    "; webhook deliveries dropped, delayed (30-90 s, overtaken), redelivered \
                     and forged (1 in 10 each)",
                );
            }
            return Ok(Some(said));
        };
        if Instant::now() < next {
            return Ok(None);
        }
        self.next = Some(Instant::now() + self.interval(demo));
        // Weighted: the scale-in, which undoes the alarms' work, least often.
        let done = match self.rng.gen_range(0..10) {
            0 | 1 => self.kill_agent(demo).await?,
            2 | 3 => self.crash_lambda(demo).await?,
            4 | 5 => {
                self.github_fault(
                    demo,
                    json!({"status": 502, "count": 3}),
                    "github_5xx_bursts",
                    "GitHub answers 502 three times",
                )
                .await?
            }
            6 => {
                self.github_fault(
                    demo,
                    json!({"status": 403, "count": 2, "retry_after": 2}),
                    "github_rate_limit_bursts",
                    "GitHub refuses twice: secondary rate limit, retry after 2 s",
                )
                .await?
            }
            7 => self.scale_in(demo).await?,
            _ => self.terminate_busy(demo).await?,
        };
        Ok(done)
    }

    /// 15-45 world seconds.
    fn interval(&mut self, demo: &Demo) -> Duration {
        demo.real(self.rng.gen_range(15.0..45.0))
    }

    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }

    /// Instances whose process runs (not hibernated, not stopped), with their root.
    async fn running_instances(&self, demo: &Demo) -> anyhow::Result<Vec<Value>> {
        let all: Vec<Value> = demo.world.aws_control("instances").await?;
        Ok(all
            .into_iter()
            .filter(|i| i["pid"].is_u64() && i["process"] == "running")
            .collect())
    }

    async fn kill_agent(&mut self, demo: &Demo) -> anyhow::Result<Option<String>> {
        let running = self.running_instances(demo).await?;
        if running.is_empty() {
            return Ok(None);
        }
        let pick = &running[self.rng.gen_range(0..running.len())];
        let root = std::path::PathBuf::from(pick["root"].as_str().unwrap_or_default());
        let Ok(state) = std::fs::read(root.join("var/lib/warmfleet/state.json")) else {
            return Ok(None);
        };
        let state: Value = serde_json::from_slice(&state).unwrap_or_default();
        let Some(pid) = state["agent_pid"].as_u64() else {
            return Ok(None);
        };
        // Only the agent: the pid must still be a warmfleet-agent (not reused).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("warmfleet-agent") {
            return Ok(None);
        }
        if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_err() {
            return Ok(None);
        }
        self.count("agents_killed");
        Ok(Some(format!(
            "chaos: killed the agent of {} (SIGKILL, it was {})",
            pick["id"].as_str().unwrap_or_default(),
            state["state"]["name"].as_str().unwrap_or("?")
        )))
    }

    /// Slows GitHub's next runners request so a Lambda is caught mid-invocation, then kills
    /// the process running it.
    async fn crash_lambda(&mut self, demo: &Demo) -> anyhow::Result<Option<String>> {
        self.fault(demo, json!({"latency_ms": 3000, "count": 1}))
            .await?;
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            let calls: Vec<Value> = demo.world.aws_control("invocations").await?;
            if let Some(call) = calls
                .iter()
                .rev()
                .find(|c| c["outcome"] == "running" && c["pid"].is_u64())
            {
                let pid = call["pid"].as_u64().unwrap_or_default() as i32;
                if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    self.count("lambdas_crashed");
                    return Ok(Some(format!(
                        "chaos: killed {} mid-invocation (pid {pid})",
                        call["function"].as_str().unwrap_or("a function")
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(None)
    }

    async fn fault(&self, demo: &Demo, mut fault: Value) -> anyhow::Result<()> {
        fault["path"] = json!(format!("/orgs/{ORG}/actions/runners"));
        demo.world
            .http
            .post(format!("{}/_testbed/faults", demo.world.github))
            .json(&fault)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn github_fault(
        &mut self,
        demo: &Demo,
        fault: Value,
        kind: &'static str,
        what: &str,
    ) -> anyhow::Result<Option<String>> {
        self.fault(demo, fault).await?;
        self.count(kind);
        Ok(Some(format!("chaos: {what}")))
    }

    async fn busy_instances(&self, demo: &Demo) -> anyhow::Result<Vec<String>> {
        let runners: Vec<Value> = demo.world.github_control("runners").await?;
        Ok(runners
            .iter()
            .filter(|r| r["busy"] == true)
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect())
    }

    async fn scale_in(&mut self, demo: &Demo) -> anyhow::Result<Option<String>> {
        let (_, desired) = super::census(demo).await?;
        if desired <= demo.fleet.min_size as i32 || self.busy_instances(demo).await?.is_empty() {
            return Ok(None);
        }
        demo.asg
            .set_desired_capacity()
            .auto_scaling_group_name(&demo.fleet.group)
            .desired_capacity(desired - 1)
            .send()
            .await?;
        self.count("scale_ins_during_jobs");
        Ok(Some(format!(
            "chaos: desired {desired} -> {} while jobs run",
            desired - 1
        )))
    }

    async fn terminate_busy(&mut self, demo: &Demo) -> anyhow::Result<Option<String>> {
        let busy = self.busy_instances(demo).await?;
        if busy.is_empty() {
            return Ok(None);
        }
        let id = busy[self.rng.gen_range(0..busy.len())].clone();
        let done = demo
            .asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&id)
            .should_decrement_desired_capacity(false)
            .send()
            .await;
        if done.is_err() {
            return Ok(None);
        }
        self.count("busy_instances_terminated");
        Ok(Some(format!(
            "chaos: terminated {id} while its runner is busy (replaced)"
        )))
    }
}
