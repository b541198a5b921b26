//! `--module-vars FILE`: the fleet's shape from the Terraform module's own inputs (a
//! `terraform.tfvars.json`), so the demo runs the configuration users apply. Inputs the file
//! leaves out take the module's defaults, read from `infra/variables.tf` as built in; inputs
//! that shape nothing on the testbed (subnets, AMI, alerting...) are accepted and listed;
//! anything else is refused by name.

use super::settings::{Fleet, Mode};
use anyhow::{bail, Context};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// The module's variables file, as this testbed was built with it.
const VARIABLES_TF: &str = include_str!("../../../infra/variables.tf");

/// The module's inputs and their defaults (`None`: required). Only literal defaults are
/// read (numbers, booleans, strings, lists, `{}`), which is all the module has.
fn module_inputs() -> anyhow::Result<Map<String, Value>> {
    let mut inputs = Map::new();
    for block in VARIABLES_TF.split("\nvariable \"").skip(1) {
        let name = block.split('"').next().unwrap_or_default().to_owned();
        let default = block
            .lines()
            .take_while(|l| !l.starts_with('}'))
            .find_map(|l| l.trim().strip_prefix("default").map(str::trim))
            .and_then(|l| l.strip_prefix('='))
            .map(|v| {
                serde_json::from_str(v.trim())
                    .with_context(|| format!("infra/variables.tf: the default of {name}"))
            })
            .transpose()?;
        inputs.insert(name, default.unwrap_or(Value::Null));
    }
    Ok(inputs)
}

/// Inputs that decide what the testbed builds.
const SHAPING: &[&str] = &[
    "name",
    "min_size",
    "max_size",
    "idle_runners_target",
    "runner_mode",
    "runner_default_labels",
    "runner_labels",
    "scale_out_max_step",
    "scale_out_evaluation_periods",
    "scale_in_evaluation_periods",
    "scale_in_max_step",
    "instance_warmup_seconds",
    "instance_refresh",
    "instance_refresh_max_healthy_percentage",
    "warm_pool",
    "warm_pool_min_size",
    "warm_pool_max_prepared",
    "warm_pool_reuse_on_scale_in",
    "spot",
    "instance_types",
    "webhook_claims_idle_runners",
    "use_runner_table",
];

/// The fleet `base` (its testbed settings and workload) shaped by the module's inputs in
/// `path`; also the names of the inputs given that shape nothing here.
pub fn apply(path: &Path, base: Fleet) -> anyhow::Result<(Fleet, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the module variables {}", path.display()))?;
    let given: Map<String, Value> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON object of inputs", path.display()))?;
    shape(&given, base).with_context(|| format!("in the module variables {}", path.display()))
}

fn shape(given: &Map<String, Value>, mut fleet: Fleet) -> anyhow::Result<(Fleet, Vec<String>)> {
    let mut inputs = module_inputs()?;
    if let Some(gone) = SHAPING.iter().find(|k| !inputs.contains_key(**k)) {
        bail!(
            "infra/variables.tf has no input {gone}, which the testbed maps: update module_vars.rs"
        );
    }
    let mut ignored = vec![];
    for (key, value) in given {
        if !inputs.contains_key(key) {
            bail!("{key} is not an input of the module (infra/variables.tf)");
        }
        if !SHAPING.contains(&key.as_str()) {
            ignored.push(key.clone());
        }
        inputs.insert(key.clone(), value.clone());
    }
    let number = |key: &str| -> anyhow::Result<i64> {
        inputs[key]
            .as_i64()
            .with_context(|| format!("{key}: a whole number, not {}", inputs[key]))
    };
    let count = |key: &str| -> anyhow::Result<u32> {
        u32::try_from(number(key)?).with_context(|| format!("{key}: 0 or more"))
    };
    let flag = |key: &str| -> anyhow::Result<bool> {
        inputs[key]
            .as_bool()
            .with_context(|| format!("{key}: true or false, not {}", inputs[key]))
    };
    let strings = |key: &str| -> anyhow::Result<Vec<String>> {
        serde_json::from_value(inputs[key].clone())
            .with_context(|| format!("{key}: a list of strings"))
    };
    fleet.group = inputs["name"]
        .as_str()
        .context("name: the module needs it (the group's name)")?
        .to_owned();
    fleet.min_size = count("min_size")?;
    fleet.max_size = count("max_size")?;
    fleet.idle_runner_target = count("idle_runners_target")?;
    fleet.runner_mode = match inputs["runner_mode"].as_str() {
        Some("persistent") => Mode::Persistent,
        Some("ephemeral") => Mode::Ephemeral,
        _ => bail!("runner_mode: persistent or ephemeral"),
    };
    fleet.runner_default_labels = flag("runner_default_labels")?;
    fleet.runner_labels = strings("runner_labels")?;
    fleet.scale_out_max_step = count("scale_out_max_step")?;
    fleet.scale_out_evaluation_periods = count("scale_out_evaluation_periods")?;
    fleet.scale_in_evaluation_periods = Some(count("scale_in_evaluation_periods")?);
    fleet.scale_in_max_step = count("scale_in_max_step")?;
    fleet.instance_warmup = Duration::from_secs(u64::from(count("instance_warmup_seconds")?));
    fleet.refresh.instance_refresh = flag("instance_refresh")?;
    fleet.refresh.max_healthy_percentage = count("instance_refresh_max_healthy_percentage")?;
    // As the module: hibernation needs on-demand capacity of one instance type.
    let mixed = flag("spot")? || strings("instance_types")?.len() > 1;
    fleet.warm_pool.enabled = flag("warm_pool")? && !mixed;
    fleet.warm_pool.min_size = Some(count("warm_pool_min_size")?);
    fleet.warm_pool.max_prepared_capacity = match &inputs["warm_pool_max_prepared"] {
        Value::Null => None,
        _ => match number("warm_pool_max_prepared")? {
            -1 => Some(fleet.max_size),
            n => Some(u32::try_from(n).context("warm_pool_max_prepared: null, -1, or 0 or more")?),
        },
    };
    fleet.warm_pool.reuse_on_scale_in = flag("warm_pool_reuse_on_scale_in")?;
    fleet.claim_idle = flag("webhook_claims_idle_runners")?;
    fleet.runner_table = flag("use_runner_table")?;
    fleet.check()?;
    Ok((fleet, ignored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_input_the_testbed_maps_is_the_modules() {
        let inputs = module_inputs().unwrap();
        for key in SHAPING {
            assert!(inputs.contains_key(*key), "{key}");
        }
        assert!(inputs.len() > SHAPING.len());
    }

    #[test]
    fn the_modules_defaults_fill_what_the_file_leaves_out() {
        let (f, ignored) = shape(
            &given(json!({"name": "ci", "subnet_ids": ["subnet-1"], "ami_id": "ami-1"})),
            Fleet::default(),
        )
        .unwrap();
        // infra/variables.tf's defaults.
        assert_eq!((f.group.as_str(), f.min_size, f.max_size), ("ci", 0, 10));
        assert_eq!(f.idle_runner_target, 1);
        assert_eq!(f.runner_mode, Mode::Persistent);
        assert_eq!(f.labels(), ["self-hosted", "Linux", "X64"]);
        assert_eq!(f.scale_out_max_step, 3);
        assert_eq!(
            (
                f.scale_out_evaluation_periods,
                f.scale_in_evaluation_periods,
                f.scale_in_max_step
            ),
            (1, Some(10), 1)
        );
        assert_eq!(f.instance_warmup, Duration::from_secs(120));
        assert!(f.warm_pool.enabled && f.warm_pool.reuse_on_scale_in);
        assert_eq!(f.warm_pool.min_size, Some(1));
        assert_eq!(f.warm_pool.max_prepared_capacity, None);
        assert_eq!(
            f.warm_pool_max_prepared(),
            f.max_size + 1,
            "max_size + the pool's min"
        );
        assert!(f.refresh.instance_refresh);
        assert_eq!(f.refresh.max_healthy_percentage, 110);
        assert_eq!(ignored, ["ami_id", "subnet_ids"]);
    }

    #[test]
    fn the_files_inputs_shape_the_fleet_as_the_module_would() {
        let (f, _) = shape(
            &given(
                json!({"name": "jit", "runner_mode": "ephemeral", "idle_runners_target": 0,
                "max_size": 4, "spot": true, "runner_labels": ["linux", "jit"],
                "warm_pool_max_prepared": 6}),
            ),
            Fleet::default(),
        )
        .unwrap();
        assert_eq!(f.runner_mode, Mode::Ephemeral);
        assert_eq!((f.idle_runner_target, f.max_size), (0, 4));
        assert!(!f.warm_pool.enabled, "spot turns the warm pool off");
        // linux is among the default labels already (GitHub compares without case).
        assert_eq!(f.labels(), ["self-hosted", "Linux", "X64", "jit"]);
        assert_eq!(f.warm_pool.max_prepared_capacity, Some(6));
        let (f, _) = shape(
            &given(json!({"name": "aws", "max_size": 5, "warm_pool_max_prepared": -1})),
            Fleet::default(),
        )
        .unwrap();
        assert_eq!(
            f.warm_pool_max_prepared(),
            5,
            "-1 is AWS's default, max_size"
        );
        let (f, _) = shape(
            &given(json!({"name": "bare", "runner_default_labels": false,
                          "runner_labels": ["linux"]})),
            Fleet::default(),
        )
        .unwrap();
        assert_eq!(f.labels(), ["linux"]);
    }

    #[test]
    fn unknown_and_ill_typed_inputs_are_named() {
        let e = shape(
            &given(json!({"name": "ci", "max_sise": 3})),
            Fleet::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_sise is not an input of the module"), "{e}");
        let e = shape(
            &given(json!({"name": "ci", "max_size": "3"})),
            Fleet::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_size: a whole number"), "{e}");
        let e = shape(&given(json!({"max_size": 3})), Fleet::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("name: the module needs it"), "{e}");
        let e = format!(
            "{:#}",
            shape(
                &given(json!({"name": "ci", "min_size": 5, "max_size": 2})),
                Fleet::default()
            )
            .unwrap_err()
        );
        assert!(
            e.contains("min_size (5) must be at most max_size (2)"),
            "{e}"
        );
    }
}
