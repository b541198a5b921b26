//! SSM Run Command with aws-sdk-ssm: scripts really run in the targeted instance only.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_ssm::types::CommandInvocationStatus;
use common::aws::Aws;
use std::time::Duration;
use tokio::time::Instant;

async fn send(
    ssm: &aws_sdk_ssm::Client,
    instance: &str,
    lines: &[&str],
    timeout: Option<&str>,
) -> String {
    let mut req = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(instance)
        .comment("test")
        .parameters("commands", lines.iter().map(|s| s.to_string()).collect());
    if let Some(t) = timeout {
        req = req.parameters("executionTimeout", vec![t.to_owned()]);
    }
    let out = req.send().await.unwrap();
    out.command().unwrap().command_id().unwrap().to_owned()
}

/// Polls GetCommandInvocation until the invocation has ended.
async fn finished(
    ssm: &aws_sdk_ssm::Client,
    command: &str,
    instance: &str,
) -> aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ssm
            .get_command_invocation()
            .command_id(command)
            .instance_id(instance)
            .send()
            .await
            .unwrap();
        if !matches!(
            out.status(),
            Some(CommandInvocationStatus::Pending | CommandInvocationStatus::InProgress)
        ) {
            return out;
        }
        assert!(Instant::now() < until, "still {:?}", out.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn two_instances() -> (Aws, aws_sdk_ssm::Client, String, String) {
    let aws = Aws::start(Some("exec sleep 600"), "1").await;
    aws.create("g", 0, 2, 2, vec![]).await;
    let running = aws
        .until("g", false, "in service", |i| {
            i.len() == 2 && i.iter().all(|x| x.1 == "InService")
        })
        .await;
    let ssm = aws_sdk_ssm::Client::new(&aws.config);
    (aws, ssm, running[0].0.clone(), running[1].0.clone())
}

#[tokio::test]
async fn a_script_runs_in_the_targeted_instance_only_and_reports_output_and_exit_code() {
    let (aws, ssm, a, b) = two_instances().await;
    let id = send(
        &ssm,
        &a,
        &[
            "touch ran",
            "echo \"imds $AWS_EC2_METADATA_SERVICE_ENDPOINT\"",
            "echo oops >&2",
            "exit 3",
        ],
        None,
    )
    .await;
    let out = finished(&ssm, &id, &a).await;
    assert_eq!(out.status(), Some(&CommandInvocationStatus::Failed));
    assert_eq!(out.response_code(), 3);
    let imds = aws.instance(&a).await["imds"].as_str().unwrap().to_owned();
    assert_eq!(
        out.standard_output_content(),
        Some(format!("imds {imds}\n").as_str())
    );
    assert_eq!(out.standard_error_content(), Some("oops\n"));
    let root_a = aws.instance(&a).await["root"].as_str().unwrap().to_owned();
    let root_b = aws.instance(&b).await["root"].as_str().unwrap().to_owned();
    assert!(std::path::Path::new(&root_a).join("ran").exists());
    assert!(
        !std::path::Path::new(&root_b).join("ran").exists(),
        "the other instance ran nothing"
    );

    let listed = ssm
        .list_command_invocations()
        .command_id(&id)
        .details(true)
        .send()
        .await
        .unwrap();
    let rows = listed.command_invocations();
    assert_eq!(rows.len(), 1, "one invocation: the targeted instance");
    assert_eq!(rows[0].instance_id(), Some(a.as_str()));
    let plugin = &rows[0].command_plugins()[0];
    assert_eq!(plugin.name(), Some("aws:runShellScript"));
    assert_eq!(plugin.response_code(), 3);
    assert!(plugin.output().unwrap().starts_with("imds "));

    let ok = send(&ssm, &b, &["echo fine"], None).await;
    let out = finished(&ssm, &ok, &b).await;
    assert_eq!(out.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(out.response_code(), 0);
    let commands = ssm.list_commands().send().await.unwrap();
    let statuses: Vec<(&str, &str, i32)> = commands
        .commands()
        .iter()
        .map(|c| {
            (
                c.command_id().unwrap(),
                c.status().unwrap().as_str(),
                c.target_count(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [(ok.as_str(), "Success", 1), (id.as_str(), "Failed", 1)]
    );
}

#[tokio::test]
async fn scripts_time_out_and_can_be_cancelled() {
    let (_aws, ssm, a, b) = two_instances().await;
    let slow = send(&ssm, &a, &["sleep 30"], Some("1")).await;
    let out = finished(&ssm, &slow, &a).await;
    assert_eq!(out.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(out.status_details(), Some("Execution Timed Out"));

    let long = send(&ssm, &b, &["sleep 30"], None).await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ssm
            .get_command_invocation()
            .command_id(&long)
            .instance_id(&b)
            .send()
            .await
            .unwrap();
        if out.status() == Some(&CommandInvocationStatus::InProgress) {
            break;
        }
        assert!(
            Instant::now() < until,
            "never in progress: {:?}",
            out.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ssm.cancel_command().command_id(&long).send().await.unwrap();
    let out = finished(&ssm, &long, &b).await;
    assert_eq!(out.status(), Some(&CommandInvocationStatus::Cancelled));
}

#[tokio::test]
async fn an_instance_without_a_running_agent_is_refused_as_aws_refuses_it() {
    let (aws, ssm, a, _b) = two_instances().await;
    for instance in ["i-0123456789abcdef0".to_owned(), a.clone()] {
        if instance == a {
            aws.asg
                .terminate_instance_in_auto_scaling_group()
                .instance_id(&a)
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .unwrap();
            aws.until("g", false, "terminated", |i| i.len() == 1).await;
        }
        let err = ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(&instance)
            .parameters("commands", vec!["true".to_owned()])
            .send()
            .await
            .unwrap_err();
        let err = err.into_service_error();
        assert!(err.is_invalid_instance_id(), "{instance}: {err:?}");
    }
    let err = ssm
        .send_command()
        .document_name("AWS-RunPowerShellScript")
        .instance_ids(&a)
        .parameters("commands", vec!["true".to_owned()])
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_document(), "{err:?}");
}
