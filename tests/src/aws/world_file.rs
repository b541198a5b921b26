//! The world file: Lambda functions and EventBridge rules, in TOML, translated into the calls
//! Terraform would make (`CreateFunction`, `PutRule`, `PutTargets`). Documented in
//! docs/development/testbed.md.
//!
//! ```toml
//! [[function]]
//! name = "registration"
//! command = "target/debug/warmfleet-registration"
//! timeout_seconds = 30
//! environment = { WARMFLEET_GROUP = "runners" }
//!
//! [[rule]]
//! name = "registration"
//! event_pattern = { source = ["aws.autoscaling"], detail = { LifecycleHookName = ["registration"] } }
//! targets = ["registration"]
//!
//! [[rule]]
//! name = "sweep"
//! schedule_expression = "rate(5 minutes)"
//! targets = ["deregistration"]
//! ```

use super::lambda::{function_arn, FunctionSpec};
use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldFile {
    #[serde(default, rename = "function")]
    pub functions: Vec<FunctionSpec>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub event_pattern: Option<Value>,
    #[serde(default)]
    pub schedule_expression: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Function names.
    pub targets: Vec<String>,
}

impl WorldFile {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the world file {}", path.display()))?;
        let world: WorldFile =
            toml::from_str(&text).with_context(|| format!("world file {}", path.display()))?;
        for f in &world.functions {
            f.validate()
                .map_err(|e| anyhow::anyhow!("world file {}: {e}", path.display()))?;
        }
        Ok(world)
    }
}

impl RuleSpec {
    /// The `PutRule` input this rule stands for.
    pub fn put_rule(&self) -> Value {
        let mut input = json!({ "Name": self.name });
        if let Some(p) = &self.event_pattern {
            input["EventPattern"] = json!(p.to_string());
        }
        if let Some(s) = &self.schedule_expression {
            input["ScheduleExpression"] = json!(s);
        }
        if let Some(d) = &self.description {
            input["Description"] = json!(d);
        }
        input
    }

    /// The `PutTargets` input: one target per function, its id the function's name.
    pub fn put_targets(&self) -> Value {
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|f| json!({"Id": f, "Arn": function_arn(f)}))
            .collect();
        json!({ "Rule": self.name, "Targets": targets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_functions_and_rules_and_names_bad_keys() {
        let w: WorldFile = toml::from_str(
            r#"
            [[function]]
            name = "f"
            command = "/bin/true"
            [[rule]]
            name = "r"
            event_pattern = { detail = { LifecycleHookName = ["registration"] } }
            targets = ["f"]
            "#,
        )
        .unwrap();
        assert_eq!(w.functions[0].timeout_seconds, 3.0);
        assert_eq!(w.functions[0].retries, 2);
        let put = w.rules[0].put_rule();
        let pattern: Value = serde_json::from_str(put["EventPattern"].as_str().unwrap()).unwrap();
        assert_eq!(pattern["detail"]["LifecycleHookName"][0], "registration");
        assert_eq!(
            w.rules[0].put_targets()["Targets"][0]["Arn"],
            "arn:aws:lambda:us-east-1:123456789012:function:f"
        );
        let err = toml::from_str::<WorldFile>(
            "[[function]]\nname = \"f\"\ncommand = \"x\"\ntimeout = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("timeout"), "{err}");
    }
}
