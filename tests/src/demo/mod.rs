//! `warmfleet-testbed demo`, the README's main job: the whole fleet on the local world. The
//! GitHub fake and the AWS world start with the Lambdas (EventBridge rules and schedules,
//! the webhook receiver behind its function URL), an Auto Scaling group with its warm pool, lifecycle hooks, alarms and step
//! scaling policies, and instances that run the real `warmfleet-agent` with the fake runner.
//! A workload queues jobs; a live view shows the fleet; at the end the fleet winds down and
//! a report says what happened. `--chaos` breaks things meanwhile (`chaos.rs`); the fleet
//! file's `[refresh]` rolls out a new launch template version meanwhile (`rollout.rs`).
//! docs/usage/demo.md is the user's guide.

mod chaos;
pub mod module_vars;
pub mod report;
pub mod rollout;
pub mod settings;
pub mod workload;

use crate::agent_setup::{lifecycle_hooks, AgentSetup, HOOK_HEARTBEAT_SECONDS};
use crate::github::webhooks::DeliveryRec;
use crate::github::{
    control::NewJob,
    state::{JobRec, Outcome},
};
use crate::world::{Spec, World, ORG, RUNNER_TABLE, TERMINATION_POLICY_FUNCTION};
use anyhow::{bail, Context};
use aws_sdk_autoscaling::types::{InstanceReusePolicy, StepAdjustment, WarmPoolState};
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use settings::{Fleet, Pattern, PoolState};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::naming;
use workload::PlannedJob;

/// The demo's deployment id (the module's `deployment_id`).
const DEPLOYMENT: &str = "demo";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The fleet file (TOML, docs/usage/demo.md); without it, the documented defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The Terraform module's inputs (a terraform.tfvars.json): the group, its sizes, idle
    /// target, mode, labels, scaling and warm pool as the module would make them, the
    /// module's defaults for what the file leaves out (the fleet file then gives only the
    /// testbed's delays and the workload).
    #[arg(long)]
    pub module_vars: Option<PathBuf>,
    /// The workload: a pattern (steady, bursts, workday) or a CSV file
    /// (queued_at,duration,labels); default the fleet file's `[workload]`.
    #[arg(long)]
    pub workload: Option<String>,
    /// Stop the workload after N jobs, then wind down (default the fleet file's
    /// `workload.jobs`; all of a CSV file).
    #[arg(long)]
    pub jobs: Option<u32>,
    /// World seconds per real second (delays, hook timeouts, alarm periods, schedules and
    /// job lengths all run this much faster; reported times are world seconds).
    #[arg(long, default_value_t = 10.0)]
    pub time_scale: f64,
    /// Seeds the workload, the world and the chaos, for repeatable runs (default: random,
    /// printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Break things while the workload runs: agents killed, Lambda processes crashed,
    /// lifecycle events duplicated and delayed, GitHub 5xx and rate-limit bursts, scale-in
    /// and terminations while jobs run.
    #[arg(long)]
    pub chaos: bool,
    /// Also write the report here, as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Keep the world's files here (instance roots with each agent's console.log and state,
    /// Lambda logs); by default they go with the world.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Where the `warmfleet-agent` and Lambda binaries are.
    #[arg(long, default_value = "target/debug")]
    pub binaries: PathBuf,
}

/// What the demo talks to.
pub(crate) struct Demo {
    pub world: World,
    pub fleet: Fleet,
    pub time_scale: f64,
    pub asg: aws_sdk_autoscaling::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub started: Instant,
}

impl Demo {
    /// World seconds since the start.
    fn world_now(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.time_scale
    }

    /// Real time for `world` seconds.
    fn real(&self, world: f64) -> Duration {
        Duration::from_secs_f64(world / self.time_scale)
    }

    async fn jobs(&self) -> anyhow::Result<Vec<JobRec>> {
        self.world.github_control("jobs").await
    }
}

fn binary(dir: &std::path::Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::canonicalize(&path).with_context(|| {
        format!(
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            path.display()
        )
    })
}

/// The jobs to queue, from the flags over the fleet file.
fn plan(args: &DemoArgs, fleet: &mut Fleet, seed: u64) -> anyhow::Result<Vec<PlannedJob>> {
    if let Some(w) = &args.workload {
        match <Pattern as clap::ValueEnum>::from_str(w, true) {
            Ok(p) => {
                fleet.workload.pattern = p;
                fleet.workload.csv = None;
            }
            Err(_) if std::path::Path::new(w).is_file() => fleet.workload.csv = Some(w.into()),
            Err(_) => bail!("--workload {w}: neither steady, bursts, workday nor a CSV file"),
        }
    }
    let mut jobs = match &fleet.workload.csv {
        Some(csv) => workload::from_csv(csv, args.jobs)?,
        None => workload::generate(
            &fleet.workload,
            args.jobs.unwrap_or(fleet.workload.jobs),
            seed,
        ),
    };
    let start = fleet.workload.start.as_secs_f64();
    for job in &mut jobs {
        job.at += start;
    }
    Ok(jobs)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    if !(args.time_scale.is_finite() && args.time_scale >= 1.0) {
        bail!("--time-scale must be at least 1 (got {})", args.time_scale);
    }
    let mut fleet = Fleet::load(args.config.as_deref())?;
    if let Some(vars) = &args.module_vars {
        let (shaped, ignored) = module_vars::apply(vars, fleet)?;
        fleet = shaped;
        if !ignored.is_empty() {
            step(&format!(
                "module inputs that shape nothing on the testbed: {}",
                ignored.join(", ")
            ));
        }
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let planned = plan(&args, &mut fleet, seed)?;
    let agent = binary(&args.binaries, "warmfleet-agent")?;
    step(&format!(
        "fleet {}: min {}, max {}, idle target {}, {} runners, warm pool {}; {} jobs; time x{}, seed {seed}",
        fleet.group,
        fleet.min_size,
        fleet.max_size,
        fleet.idle_runner_target,
        fleet.runner_mode.as_str(),
        if fleet.warm_pool.enabled {
            format!("min {} ({:?})", fleet.warm_pool_min(), fleet.warm_pool.pool_state)
        } else {
            "off".to_owned()
        },
        planned.len(),
        args.time_scale,
    ));
    let script_dir = tempfile::tempdir()?;
    let script = script_dir.path().join("instance.sh");
    // The agent heartbeats a drain's hook three times per heartbeat timeout, lets an idle
    // drain settle for its default 5 s and lingers protected for its default 5 s after a
    // job (world time).
    let five_seconds_ms = (5.0 / args.time_scale * 1000.0).max(1.0) as u64;
    let timeouts = format!(
        "[timeouts]\nheartbeat = \"{}ms\"\nsettle = \"{five_seconds_ms}ms\"\n\
         linger = \"{five_seconds_ms}ms\"\n",
        (f64::from(HOOK_HEARTBEAT_SECONDS) / 3.0 / args.time_scale * 1000.0) as u64,
    );
    let setup = |github_url: String| AgentSetup {
        agent: agent.clone(),
        testbed: std::env::current_exe().unwrap_or_default(),
        packaging: AgentSetup::packaging_dir(),
        github_url,
        deployment: DEPLOYMENT.into(),
        labels: fleet.labels(),
        runner_table: fleet.runner_table.then(|| RUNNER_TABLE.to_owned()),
        extra_config: format!("mode = \"{}\"\n{timeouts}", fleet.runner_mode.as_str()),
        env: String::new(),
        runner_user: None,
        supervise: true,
    };
    let mut spec = Spec::lambdas(args.binaries.clone(), &[&fleet.group]);
    spec.function_env = vec![
        (
            "registration",
            "WARMFLEET_RUNNER_MODE".into(),
            fleet.runner_mode.as_str().into(),
        ),
        (
            "registration",
            "WARMFLEET_RUNNER_LABELS".into(),
            fleet.labels().join(","),
        ),
        (
            "deregistration",
            "WARMFLEET_DRAIN_COMMAND".into(),
            setup(String::new()).drain_command(),
        ),
        (
            "webhook",
            "WARMFLEET_RUNNER_LABELS".into(),
            fleet.labels().join(","),
        ),
    ];
    // A deployment of its own, as the module gives every one: its agents and Lambdas agree.
    for function in ["registration", "deregistration", "record-metric", "webhook"] {
        spec.function_env
            .push((function, "WARMFLEET_DEPLOYMENT".into(), DEPLOYMENT.into()));
    }
    spec.webhook = fleet.webhook;
    spec.claim_idle = fleet.webhook && fleet.claim_idle;
    spec.runner_table = fleet.runner_table;
    spec.lifecycle_rules = true;
    spec.schedules = true;
    spec.instance_command = Some(format!("sh {}", script.display()));
    spec.time_scale = args.time_scale;
    spec.boot_delay = fleet.boot_delay;
    spec.resume_delay = fleet.resume_delay;
    spec.hibernate_delay = fleet.hibernate_delay;
    spec.function_timeout = 900.0;
    spec.seed = Some(seed);
    spec.keep_dir = args.keep.clone();
    if args.keep.is_some() {
        spec.function_log = "info";
    }
    let world = World::start(&spec).await?;
    std::fs::write(&script, setup(format!("{}/{ORG}", world.github)).script())?;
    step(&format!(
        "GitHub fake at {}, AWS world at {} (instances under {})",
        world.github,
        world.aws,
        world.state_dir.display()
    ));
    let demo = Demo {
        asg: aws_sdk_autoscaling::Client::new(&world.sdk),
        cloudwatch: aws_sdk_cloudwatch::Client::new(&world.sdk),
        secrets: aws_sdk_secretsmanager::Client::new(&world.secrets_sdk),
        world,
        fleet,
        time_scale: args.time_scale,
        started: Instant::now(),
    };
    let outcome = tokio::select! {
        r = drive(&demo, planned, args.chaos, seed, args.keep.as_deref()) => Some(r),
        // Ctrl-C, or a SIGTERM (a CI job's timeout): the world is stopped, nothing left running.
        _ = crate::interrupted() => None,
    };
    let demo_world = demo.world;
    match outcome {
        None => {
            println!();
            step("interrupted: stopping the world");
            demo_world.stop().await;
            Ok(130)
        }
        Some(result) => {
            demo_world.stop().await;
            let (report, jobs) = result?;
            for j in jobs
                .iter()
                .filter(|j| matches!(j.outcome, Outcome::Failed | Outcome::Killed))
            {
                step(&format!(
                    "{} {:?} on {}: {}",
                    j.name,
                    j.outcome,
                    j.runner_name.as_deref().unwrap_or("?"),
                    j.message.as_deref().unwrap_or("")
                ));
            }
            let text = serde_json::to_string_pretty(&report)?;
            println!("{text}");
            if let Some(path) = &args.report {
                std::fs::write(path, &text)
                    .with_context(|| format!("writing the report to {}", path.display()))?;
            }
            if report.clean() {
                step("every job succeeded or is legitimately queued; nothing left behind");
                Ok(0)
            } else {
                step("NOT CLEAN: see the report");
                Ok(1)
            }
        }
    }
}

pub(crate) fn step(text: &str) {
    println!("==> {text}");
}

async fn drive(
    demo: &Demo,
    planned: Vec<PlannedJob>,
    chaos: bool,
    seed: u64,
    keep: Option<&std::path::Path>,
) -> anyhow::Result<(report::Report, Vec<JobRec>)> {
    create_fleet(demo).await?;
    let last_arrival = planned.last().map(|j| j.at).unwrap_or_default();
    let total = planned.len();
    let workload = queue(demo, planned);
    let mut chaos_state = chaos.then(|| chaos::Chaos::new(seed));
    let mut rollout = rollout::Rollout::new(&demo.fleet);
    let mut view = view::View::new();
    let mut queued_all = false;
    tokio::pin!(workload);
    // Routable jobs must all finish within this long after the last one arrived.
    let patience = 30.0 * 60.0;
    loop {
        if !queued_all {
            tokio::select! {
                r = &mut workload => { r?; queued_all = true; step(&format!("all {total} jobs queued")); }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let snapshot = view.show(demo).await?;
        if let Some(c) = chaos_state.as_mut() {
            if !queued_all || snapshot.jobs_open > 0 {
                if let Some(what) = c.act(demo).await? {
                    view.line(&format!("    [{:>6.0}s] {what}", demo.world_now()));
                }
            }
        }
        if let Some(r) = rollout.as_mut() {
            if let Some(what) = r.act(demo).await? {
                view.line(&format!("    [{:>6.0}s] {what}", demo.world_now()));
            }
        }
        // A rollout under way is waited for too (it may start after the last job).
        if queued_all && snapshot.jobs_open == 0 && rollout.as_ref().is_none_or(|r| r.finished()) {
            break;
        }
        if demo.world_now() > last_arrival + patience {
            step("jobs still unfinished 30 world minutes after the last arrival: winding down anyway");
            break;
        }
    }
    wind_down(demo, &mut view).await?;
    view.finish();
    let jobs = demo.jobs().await?;
    if let Some(dir) = keep {
        // The worlds' records, for a look afterwards.
        let records: [(&str, serde_json::Value); 5] = [
            ("effects.json", demo.world.aws_control("effects").await?),
            (
                "invocations.json",
                demo.world.aws_control("invocations").await?,
            ),
            (
                "deliveries.json",
                demo.world.aws_control("deliveries").await?,
            ),
            ("jobs.json", demo.world.github_control("jobs").await?),
            (
                "github-requests.json",
                demo.world.github_control("requests").await?,
            ),
        ];
        for (file, value) in records {
            std::fs::write(dir.join(file), serde_json::to_vec_pretty(&value)?)?;
        }
    }
    let mut report = collect(demo, &jobs).await?;
    report.chaos = chaos_state.map(|c| c.counts);
    report.refresh = rollout.map(|r| r.report);
    Ok((report, jobs))
}

/// Queues the planned jobs at their times.
async fn queue(demo: &Demo, planned: Vec<PlannedJob>) -> anyhow::Result<()> {
    let start = Instant::now();
    for (i, job) in planned.into_iter().enumerate() {
        tokio::time::sleep_until(start + demo.real(job.at)).await;
        demo.world
            .http
            .post(format!("{}/_testbed/jobs", demo.world.github))
            .json(&NewJob {
                scope: None,
                name: Some(format!("job-{}", i + 1)),
                labels: job.labels,
                duration_secs: job.duration / demo.time_scale,
                fail: false,
            })
            .send()
            .await?
            .error_for_status()
            .context("queueing a job")?;
    }
    Ok(())
}

/// The group, its hooks and warm pool, the alarms and step policies, as the Terraform
/// module creates them.
async fn create_fleet(demo: &Demo) -> anyhow::Result<()> {
    let f = &demo.fleet;
    demo.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(&f.group)
        .min_size(f.min_size as i32)
        .max_size(f.max_size as i32)
        .desired_capacity(f.min_size as i32)
        .launch_template(rollout::first())
        // As the module: no dynamic scale-in while an instance that just entered service
        // warms up (so an alarm acting on a count from before a burst cannot take the
        // instances the burst's jobs brought in).
        .default_instance_warmup(f.instance_warmup.as_secs() as i32)
        // As the module with use_runner_table: the termination-policy function chooses
        // which instances a scale-in takes.
        .set_termination_policies(f.runner_table.then(|| {
            vec![
                crate::aws::lambda::function_arn(TERMINATION_POLICY_FUNCTION),
                "Default".to_owned(),
            ]
        }))
        .set_lifecycle_hook_specification_list(Some(lifecycle_hooks(&[
            naming::HOOK_REGISTRATION,
            naming::HOOK_BOOTSTRAP,
            naming::HOOK_DEREGISTRATION,
        ])))
        .send()
        .await
        .context("creating the group")?;
    if f.warm_pool.enabled {
        demo.asg
            .put_warm_pool()
            .auto_scaling_group_name(&f.group)
            .min_size(f.warm_pool_min() as i32)
            .max_group_prepared_capacity(f.warm_pool_max_prepared() as i32)
            .pool_state(match f.warm_pool.pool_state {
                PoolState::Hibernated => WarmPoolState::Hibernated,
                PoolState::Stopped => WarmPoolState::Stopped,
                PoolState::Running => WarmPoolState::Running,
            })
            .instance_reuse_policy(
                InstanceReusePolicy::builder()
                    .reuse_on_scale_in(f.warm_pool.reuse_on_scale_in)
                    .build(),
            )
            .send()
            .await
            .context("creating the warm pool")?;
    }
    let step_of = |lower: Option<f64>, upper: Option<f64>, change: i32| {
        StepAdjustment::builder()
            .set_metric_interval_lower_bound(lower)
            .set_metric_interval_upper_bound(upper)
            .scaling_adjustment(change)
            .build()
    };
    // Scale out as the module does: one runner per missing idle one, up to
    // scale_out_max_step at once. With a target of 0, one runner whenever every runner is
    // busy.
    let out_steps = if f.idle_runner_target == 0 {
        vec![step_of(Some(0.0), None, 1)]
    } else {
        let max = f.scale_out_max_step as i32;
        (1..=max)
            .map(|k| {
                let lower = (k < max).then(|| -(f64::from(k) + 0.5));
                let upper = if k == 1 { 0.0 } else { -(f64::from(k) - 0.5) };
                step_of(lower, Some(upper), k)
            })
            .collect()
    };
    let policy = |name: &str, steps: Vec<StepAdjustment>| {
        demo.asg
            .put_scaling_policy()
            .auto_scaling_group_name(&f.group)
            .policy_name(name)
            .policy_type("StepScaling")
            .adjustment_type("ChangeInCapacity")
            .estimated_instance_warmup(f.instance_warmup.as_secs() as i32)
            .set_step_adjustments(Some(steps))
            .send()
    };
    let out = policy("scale-out", out_steps).await?;
    // Scale in as the module does: one runner per surplus idle one, up to
    // scale_in_max_step at once (the breach IdleRunners - target is 1, 2, ...).
    let max_in = f.scale_in_max_step as i32;
    let in_steps = (1..=max_in)
        .map(|k| {
            let lower = if k == 1 { 0.0 } else { f64::from(k) - 0.5 };
            let upper = (k < max_in).then(|| f64::from(k) + 0.5);
            step_of(Some(lower), upper, -k)
        })
        .collect();
    let inn = policy("scale-in", in_steps).await?;
    if f.webhook {
        // The webhook receiver's: +1 per queued job, a simple policy (no warm-up arithmetic,
        // and ExecutePolicy ignores its cooldown), so that every execution adds its instance.
        demo.asg
            .put_scaling_policy()
            .auto_scaling_group_name(&f.group)
            .policy_name(naming::POLICY_JOB_QUEUED)
            .policy_type("SimpleScaling")
            .adjustment_type("ChangeInCapacity")
            .scaling_adjustment(1)
            .cooldown(0)
            .send()
            .await
            .context("creating the job policy")?;
    }
    let alarm = |name: String,
                 metric: &str,
                 stat: Statistic,
                 op: ComparisonOperator,
                 threshold: f64,
                 (period, periods): (i32, u32),
                 action: Option<String>| {
        demo.cloudwatch
            .put_metric_alarm()
            .alarm_name(name)
            .namespace(naming::METRIC_NAMESPACE)
            .metric_name(metric)
            .dimensions(
                Dimension::builder()
                    .name(naming::METRIC_DIMENSION_ASG)
                    .value(&f.group)
                    .build(),
            )
            .statistic(stat)
            .period(period)
            .evaluation_periods(periods as i32)
            .threshold(threshold)
            .comparison_operator(op)
            // As the module: a period without a count is not breaching.
            .treat_missing_data("notBreaching")
            .set_alarm_actions(action.map(|a| vec![a]))
            .send()
    };
    let target = f64::from(f.idle_runner_target);
    if f.idle_runner_target == 0 {
        alarm(
            format!("{}-idle-runners-low", f.group),
            naming::METRIC_ALL_RUNNERS_BUSY,
            Statistic::Maximum,
            ComparisonOperator::GreaterThanOrEqualToThreshold,
            1.0,
            (60, f.scale_out_evaluation_periods),
            out.policy_arn,
        )
        .await?;
    } else {
        alarm(
            format!("{}-idle-runners-low", f.group),
            naming::METRIC_IDLE_RUNNERS,
            Statistic::Minimum,
            ComparisonOperator::LessThanThreshold,
            target,
            (60, f.scale_out_evaluation_periods),
            out.policy_arn,
        )
        .await?;
    }
    alarm(
        format!("{}-idle-runners-high", f.group),
        naming::METRIC_IDLE_RUNNERS,
        Statistic::Minimum,
        ComparisonOperator::GreaterThanThreshold,
        target,
        f.scale_in_alarm_periods(),
        inn.policy_arn,
    )
    .await?;
    step("group, warm pool, hooks, alarms and step policies created");
    Ok(())
}

/// After the workload: the group to zero and the warm pool deleted (its instances pass the
/// terminate hooks too), then waits until every instance is gone and the sweep has had its
/// chance to clean up.
async fn wind_down(demo: &Demo, view: &mut view::View) -> anyhow::Result<()> {
    view.line("==> winding down: group to 0, warm pool deleted");
    let group = &demo.fleet.group;
    demo.asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(group)
        .min_size(0)
        .max_size(0)
        .desired_capacity(0)
        .send()
        .await?;
    if demo.fleet.warm_pool.enabled {
        demo.asg
            .delete_warm_pool()
            .auto_scaling_group_name(group)
            .send()
            .await?;
    }
    // Two sweeps (every 5 world minutes) after the last instance went; instances may take
    // up to a terminate hook's timeout (10 world minutes) to go.
    let until = Instant::now() + demo.real(25.0 * 60.0);
    let mut gone_at: Option<Instant> = None;
    loop {
        view.show(demo).await?;
        let left = leftovers(demo).await?;
        if left.instances == 0 && gone_at.is_none() {
            gone_at = Some(Instant::now());
            view.line("==> every instance terminated");
        }
        if left.nothing() {
            return Ok(());
        }
        if gone_at.is_some_and(|t| t.elapsed() > demo.real(10.0 * 60.0)) || Instant::now() > until {
            let (states, _) = census(demo).await?;
            view.line(&format!(
                "==> still left: instances {states:?}; runners {:?}; secrets {:?}",
                left.runners, left.secrets
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The group's instances, in service and warm, and its desired capacity.
pub(crate) async fn members(
    demo: &Demo,
) -> anyhow::Result<(Vec<aws_sdk_autoscaling::types::Instance>, i32)> {
    let group = &demo.fleet.group;
    let groups = demo
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await?;
    let g = groups.auto_scaling_groups().first();
    let mut all = g.map(|g| g.instances().to_vec()).unwrap_or_default();
    // No warm pool (never, or deleted) answers an empty one.
    let pool = demo
        .asg
        .describe_warm_pool()
        .auto_scaling_group_name(group)
        .send()
        .await?;
    all.extend(pool.instances().iter().cloned());
    Ok((
        all,
        g.and_then(|g| g.desired_capacity()).unwrap_or_default(),
    ))
}

/// The group's instances (in service and warm) by lifecycle state, and its desired capacity.
pub(crate) async fn census(demo: &Demo) -> anyhow::Result<(BTreeMap<String, usize>, i32)> {
    let (all, desired) = members(demo).await?;
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for i in &all {
        let s = i.lifecycle_state().map_or("?", |s| s.as_str());
        *states.entry(s.to_owned()).or_default() += 1;
    }
    states.retain(|s, _| !s.ends_with("Terminated"));
    Ok((states, desired))
}

/// What is still there: instances (by state), runners and the instances' secrets, by name.
struct Leftovers {
    instances: usize,
    runners: Vec<String>,
    secrets: Vec<String>,
}

impl Leftovers {
    fn nothing(&self) -> bool {
        self.instances == 0 && self.runners.is_empty() && self.secrets.is_empty()
    }
}

async fn leftovers(demo: &Demo) -> anyhow::Result<Leftovers> {
    let (instances, _) = census(demo).await?;
    let runners: Vec<serde_json::Value> = demo.world.github_control("runners").await?;
    Ok(Leftovers {
        instances: instances.values().sum(),
        runners: runners.iter().map(describe_runner).collect(),
        secrets: instance_secrets(demo).await?,
    })
}

/// A runner as the fake holds it: name, id, online or not, busy or not, labels.
fn describe_runner(r: &serde_json::Value) -> String {
    let labels: Vec<&str> = r["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str())
        .collect();
    format!(
        "{} (id {}, {}{}, labels [{}])",
        r["name"].as_str().unwrap_or("?"),
        r["id"],
        r["status"].as_str().unwrap_or("?"),
        if r["busy"] == true { ", busy" } else { "" },
        labels.join(",")
    )
}

/// The names of the group's per-instance secrets still in Secrets Manager.
async fn instance_secrets(demo: &Demo) -> anyhow::Result<Vec<String>> {
    let mut pages = demo.secrets.list_secrets().into_paginator().send();
    let mut names = Vec::new();
    while let Some(page) = pages.next().await {
        names.extend(
            page?
                .secret_list()
                .iter()
                .filter_map(|s| s.name())
                .filter(|n| naming::instance_of_secret(&demo.fleet.group, n).is_some())
                .map(str::to_owned),
        );
    }
    Ok(names)
}

/// The group's scaling activities, newest first.
async fn activities(demo: &Demo) -> anyhow::Result<Vec<aws_sdk_autoscaling::types::Activity>> {
    let out = demo
        .asg
        .describe_scaling_activities()
        .auto_scaling_group_name(&demo.fleet.group)
        .send()
        .await?;
    Ok(out.activities.unwrap_or_default())
}

async fn collect(demo: &Demo, jobs: &[JobRec]) -> anyhow::Result<report::Report> {
    let (job_counts, waits) = report::jobs(jobs, demo.time_scale, &demo.fleet.runner_label_set());
    let effects: Vec<serde_json::Value> = demo.world.aws_control("effects").await?;
    let (mut instances, instance_seconds) = report::instances(&effects, demo.world_now());
    let activities = activities(demo).await?;
    let caused = |what: &str| {
        activities
            .iter()
            .filter(|a| a.cause().is_some_and(|c| c.contains(what)))
            .count()
    };
    instances.abandoned = caused("abandoned");
    let scaling = report::ScalingCounts {
        scale_outs: caused("triggered policy scale-out"),
        scale_ins: caused("triggered policy scale-in"),
        webhook_scale_outs: caused(&format!("policy {}", naming::POLICY_JOB_QUEUED)),
        termination_policy_asks: effects
            .iter()
            .filter(|e| e["effect"].get("ChooseTermination").is_some())
            .count(),
    };
    let requests: Vec<serde_json::Value> = demo.world.github_control("requests").await?;
    let webhook = if demo.fleet.webhook {
        let deliveries: Vec<DeliveryRec> = demo.world.github_control("webhooks/deliveries").await?;
        Some(report::webhooks(&deliveries))
    } else {
        None
    };
    let left = leftovers(demo).await?;
    let calls: BTreeMap<String, u64> = demo.world.aws_control("calls").await?;
    Ok(report::Report {
        jobs: job_counts,
        job_wait_seconds: waits,
        job_wait_split: wait_split(demo, jobs),
        webhook,
        instances,
        instance_seconds,
        scaling,
        github: report::GithubCounts {
            api_calls: requests.len(),
            orphan_runners_at_end: left.runners.len(),
        },
        aws: report::AwsCounts {
            leaked_secrets_at_end: left.secrets.len(),
            pending_hooks_at_end: report::pending_hooks(&effects),
            protection_calls_per_job: report::per_job(
                calls
                    .get("autoscaling:SetInstanceProtection")
                    .copied()
                    .unwrap_or(0),
                jobs.iter().filter(|j| j.started_at.is_some()).count(),
            ),
            calls,
        },
        chaos: None,
        refresh: None,
    })
}

/// The job waits split by what held them back (see `report::wait_split`).
fn wait_split(demo: &Demo, jobs: &[JobRec]) -> report::WaitSplit {
    let Some(t0) = jobs.iter().map(|j| j.queued_at).min() else {
        return report::WaitSplit::default();
    };
    let world = |t: chrono::DateTime<chrono::Utc>| {
        (t - t0).num_milliseconds() as f64 / 1000.0 * demo.time_scale
    };
    let spans: Vec<report::Span> = jobs
        .iter()
        .map(|j| report::Span {
            queued: world(j.queued_at),
            started: j.started_at.map(world),
            finished: j.finished_at.map(world),
        })
        .collect();
    report::wait_split(&spans, demo.fleet.max_size)
}

mod view {
    //! The live view: one line of the fleet's state, redrawn in place on a terminal and
    //! printed when it changes otherwise, with each scaling activity on a line of its own.

    use super::Demo;
    use crate::github::state::Outcome;
    use std::io::{IsTerminal, Write};

    pub struct View {
        tty: bool,
        last: String,
        activities_seen: usize,
    }

    pub struct Snapshot {
        /// Jobs queued or running.
        pub jobs_open: usize,
    }

    impl View {
        pub fn new() -> View {
            View {
                tty: std::io::stdout().is_terminal(),
                last: String::new(),
                activities_seen: 0,
            }
        }

        pub async fn show(&mut self, demo: &Demo) -> anyhow::Result<Snapshot> {
            let (states, desired) = super::census(demo).await?;
            let runners: Vec<serde_json::Value> = demo.world.github_control("runners").await?;
            let online = runners.iter().filter(|r| r["status"] == "online");
            let busy = online.clone().filter(|r| r["busy"] == true).count();
            let idle = online.count() - busy;
            let jobs = demo.jobs().await?;
            let count = |o: Outcome| jobs.iter().filter(|j| j.outcome == o).count();
            let (queued, running) = (count(Outcome::Queued), count(Outcome::Running));
            let routable_queued = jobs
                .iter()
                .filter(|j| j.outcome == Outcome::Queued)
                .filter(|j| super::report::routable(&j.labels, &demo.fleet.runner_label_set()))
                .count();
            let alarms = demo.cloudwatch.describe_alarms().send().await?;
            let alarm_text: Vec<String> = alarms
                .metric_alarms()
                .iter()
                .map(|a| {
                    let name = a.alarm_name().unwrap_or_default();
                    let short = name.rsplit("-runners-").next().unwrap_or(name);
                    let state = a.state_value().map(|s| s.as_str()).unwrap_or("?");
                    format!("{short} {state}")
                })
                .collect();
            let all = super::activities(demo).await?;
            // Newest first: print those not seen yet, oldest first.
            let new = all.len().saturating_sub(self.activities_seen);
            for a in all.iter().take(new).rev() {
                let cause = a.cause().unwrap_or_default();
                if cause.contains("alarm") || cause.contains("abandoned") {
                    // "At <time> a monitor alarm ...": the world time is shown instead.
                    let what = match cause.strip_prefix("At ") {
                        Some(rest) => rest.split_once(' ').map_or(rest, |(_, r)| r),
                        None => cause,
                    };
                    self.line(&format!("    [{:>6.0}s] {what}", demo.world_now()));
                }
            }
            self.activities_seen = all.len();
            let states_text: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            let text = format!(
                "[{:>6.0}s] desired {} | {} | runners {idle} idle {busy} busy | jobs {queued} queued {running} running {} done | {}",
                demo.world_now(),
                desired,
                if states_text.is_empty() { "no instances".to_owned() } else { states_text.join(", ") },
                jobs.len() - queued - running,
                alarm_text.join(", "),
            );
            let shown = text
                .split_once(']')
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_default();
            if self.tty {
                print!("\r\x1b[2K{text}");
                let _ = std::io::stdout().flush();
            } else if shown != self.last {
                println!("{text}");
            }
            self.last = shown;
            Ok(Snapshot {
                jobs_open: routable_queued + running,
            })
        }

        /// A line above the live one.
        pub fn line(&self, text: &str) {
            if self.tty {
                print!("\r\x1b[2K");
            }
            println!("{text}");
        }

        pub fn finish(&self) {
            if self.tty {
                println!();
            }
        }
    }
}
