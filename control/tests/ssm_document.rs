//! The drain shipped as a named SSM document (infra/ssm/warmfleet-drain.json, for operators
//! to run by hand) must run what the deregistration Lambda sends by default, with the same
//! default limit, and be a well-formed Command document.

use serde_json::Value;
use std::collections::BTreeSet;
use warmfleet_control::config::DeregistrationSettings;

fn document() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/ssm/warmfleet-drain.json"
    );
    let text = std::fs::read_to_string(path).expect("the SSM document");
    serde_json::from_str(&text).expect("the SSM document is JSON")
}

#[test]
fn the_drain_document_runs_what_the_lambda_sends() {
    let doc = document();
    assert_eq!(doc["schemaVersion"], "2.2");
    let steps = doc["mainSteps"].as_array().expect("mainSteps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["action"], "aws:runShellScript");
    let lambda = DeregistrationSettings::from_env(&[
        ("WARMFLEET_GITHUB_URL", "https://github.com/acme"),
        ("WARMFLEET_GITHUB_CREDENTIAL_SECRET", "gh"),
        ("WARMFLEET_GROUPS", "runners"),
    ])
    .expect("the Lambda's defaults");
    // The Lambda sends "<drain command> --timeout <seconds>s".
    assert_eq!(
        steps[0]["inputs"]["runCommand"],
        serde_json::json!([format!(
            "{} --timeout {{{{ TimeoutSeconds }}}}s",
            lambda.drain_command
        )])
    );
    let timeout = &doc["parameters"]["TimeoutSeconds"];
    assert_eq!(
        timeout["default"],
        lambda.drain_timeout.as_secs().to_string(),
        "the same default limit as the Lambda's"
    );
}

#[test]
fn every_parameter_the_document_uses_is_declared() {
    let doc = document();
    let declared: BTreeSet<&str> = doc["parameters"]
        .as_object()
        .expect("parameters")
        .keys()
        .map(String::as_str)
        .collect();
    let text = doc["mainSteps"].to_string();
    let used: BTreeSet<&str> = text
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split("}}").next())
        .map(str::trim)
        .collect();
    assert!(!used.is_empty());
    assert!(
        used.is_subset(&declared),
        "used {used:?}, declared {declared:?}"
    );
}
