//! Instances as processes: their own IMDSv2, and hibernation as the sleep hooks plus
//! SIGSTOP/SIGCONT of the process group.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use aws_sdk_autoscaling::types::WarmPoolState;
use common::aws::Aws;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// What each instance runs: it installs a sleep hook that logs its arguments, then idles.
const INSTANCE: &str = r#"mkdir -p usr/lib/systemd/system-sleep
printf '#!/bin/sh\necho "$1 $2" >> "$WARMFLEET_INSTANCE_ROOT/sleep.log"\n' > usr/lib/systemd/system-sleep/log
chmod +x usr/lib/systemd/system-sleep/log
echo "$AWS_EC2_METADATA_SERVICE_ENDPOINT" > imds.url
exec sleep 600"#;

/// The kernel's view of a process: `T` when stopped, `S`/`R` when running, `None` once gone.
fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

async fn wait_proc(pid: u64, want: Option<char>) {
    let until = Instant::now() + Duration::from_secs(10);
    while proc_state(pid) != want {
        assert!(
            Instant::now() < until,
            "process {pid} is {:?}, not {want:?}",
            proc_state(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn imds(url: &str) -> aws_config::imds::Client {
    let provider = aws_config::provider_config::ProviderConfig::default()
        .with_http_client(aws_smithy_http_client::Builder::new().build_http());
    aws_config::imds::Client::builder()
        .configure(&provider)
        .endpoint(url)
        .unwrap()
        .build()
}

#[tokio::test]
async fn a_warm_instance_hibernates_with_its_process_stopped_and_resumes_into_service() {
    let aws = Aws::start(Some(INSTANCE), "1").await;
    aws.create("wp", 0, 1, 0, vec![]).await;
    aws.asg
        .put_warm_pool()
        .auto_scaling_group_name("wp")
        .min_size(1)
        .pool_state(WarmPoolState::Hibernated)
        .send()
        .await
        .unwrap();
    let warm = aws
        .until("wp", true, "hibernated", |xs| {
            xs.len() == 1 && xs[0].1 == "Warmed:Hibernated"
        })
        .await;
    let id = warm[0].0.clone();
    let record = aws.instance(&id).await;
    let pid = record["pid"].as_u64().unwrap();
    let root = PathBuf::from(record["root"].as_str().unwrap());
    wait_proc(pid, Some('T')).await;
    assert_eq!(aws.instance(&id).await["process"], "hibernated");
    assert_eq!(
        std::fs::read_to_string(root.join("sleep.log")).unwrap(),
        "pre hibernate\n"
    );
    let url = std::fs::read_to_string(root.join("imds.url")).unwrap();
    assert_eq!(
        url.trim(),
        record["imds"].as_str().unwrap(),
        "the instance learnt its IMDS from the environment"
    );

    // The aws-config IMDS client reads the instance's metadata.
    let client = imds(url.trim()).await;
    assert_eq!(
        client
            .get("/latest/meta-data/instance-id")
            .await
            .unwrap()
            .as_ref(),
        id
    );
    assert_eq!(
        client
            .get("/latest/meta-data/placement/region")
            .await
            .unwrap()
            .as_ref(),
        "us-east-1"
    );
    assert_eq!(
        client
            .get("/latest/meta-data/tags/instance/aws:autoscaling:groupName")
            .await
            .unwrap()
            .as_ref(),
        "wp"
    );
    let target = "/latest/meta-data/autoscaling/target-lifecycle-state";
    assert_eq!(
        client.get(target).await.unwrap().as_ref(),
        "Warmed:Hibernated"
    );

    aws.set_desired("wp", 1).await;
    aws.until("wp", false, "in service", |xs| {
        xs.len() == 1 && xs[0] == (id.clone(), "InService".into())
    })
    .await;
    wait_proc(pid, Some('S')).await;
    assert_eq!(client.get(target).await.unwrap().as_ref(), "InService");
    let until = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(root.join("sleep.log")).unwrap()
        != "pre hibernate\npost hibernate\n"
    {
        assert!(Instant::now() < until, "the post hook never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    aws.asg
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    wait_proc(pid, None).await;
    assert_eq!(aws.instance(&id).await["process"], "stopped");
}

#[tokio::test]
async fn imds_tokens_honour_their_ttl() {
    let aws = Aws::start(None, "1").await;
    aws.create("g", 1, 1, 1, vec![]).await;
    let id = aws
        .until("g", false, "in service", |xs| {
            xs.len() == 1 && xs[0].1 == "InService"
        })
        .await[0]
        .0
        .clone();
    let url = aws.instance(&id).await["imds"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let get = |token: Option<String>| {
        let mut req = http.get(format!("{url}/latest/meta-data/instance-id"));
        if let Some(t) = token {
            req = req.header("x-aws-ec2-metadata-token", t);
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401, "IMDSv2 only");
    let no_ttl = http
        .put(format!("{url}/latest/api/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_ttl.status(), 400);
    let token = http
        .put(format!("{url}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ok = get(Some(token.clone())).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), id);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(Some(token)).await.unwrap().status(), 401, "expired");
    assert_eq!(get(Some("forged".into())).await.unwrap().status(), 401);
}
