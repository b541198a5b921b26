//! Secrets Manager (moto, started by the testbed) through core's `SecretStore` adapter, with
//! the endpoint taken from `AWS_ENDPOINT_URL_SECRETS_MANAGER` as on a real deployment, and
//! the GitHub credential loaded from it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use warmfleet_core::aws::{load_config, SecretsManager};
use warmfleet_core::github::{GithubClient, GithubCredential, GithubError, GithubTarget};
use warmfleet_core::ports::SecretStore;

#[tokio::test]
async fn the_github_credential_comes_from_secrets_manager() {
    let state = tempfile::tempdir().unwrap();
    let mut world = Command::new(TESTBED)
        .args([
            "aws",
            "--listen",
            "127.0.0.1:0",
            "--boot-delay",
            "0s",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--instance-command", "env > env.txt; exec sleep 600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(world.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    let endpoints: Value = reqwest::get(format!("{url}/_testbed/aws/endpoints"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secrets_url = endpoints["secretsmanager"]
        .as_str()
        .expect("moto is up")
        .to_owned();

    // Configured as a Lambda or the agent would be: from the environment.
    std::env::set_var("AWS_ENDPOINT_URL_SECRETS_MANAGER", &secrets_url);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testbed");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testbed");
    let config = load_config().await;
    let admin = aws_sdk_secretsmanager::Client::new(&config);
    admin
        .create_secret()
        .name("warmfleet/github")
        .secret_string(format!("{{\"token\": \"{PAT}\"}}"))
        .send()
        .await
        .unwrap();

    let store = SecretsManager::new(&config);
    assert!(store.get("warmfleet/nothing-here").await.unwrap().is_none());
    // An update never creates (only the registration Lambda may, with the tags).
    let value = SecretString::from("v2".to_owned());
    assert!(!store
        .update("warmfleet/nothing-here", &value)
        .await
        .unwrap());
    assert!(store.get("warmfleet/nothing-here").await.unwrap().is_none());
    store
        .put("warmfleet/a/i-1", &"v1".to_owned().into(), &[("k", "v")])
        .await
        .unwrap();
    assert!(store.update("warmfleet/a/i-1", &value).await.unwrap());
    let now = store.get("warmfleet/a/i-1").await.unwrap().unwrap();
    assert_eq!(now.expose_secret(), "v2");
    let credential = GithubCredential::load(&store, "warmfleet/github")
        .await
        .unwrap();
    let gh = Github::start(&[]);
    let target = GithubTarget::parse(&gh.org_url(), None).unwrap();
    let client = GithubClient::connect(target, &credential, fast_retries(), deadline(10))
        .await
        .unwrap();
    client
        .registration_token(deadline(10))
        .await
        .expect("the PAT from the secret works");

    let missing = GithubCredential::load(&store, "warmfleet/absent")
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, GithubError::Credential { secret_id, .. } if secret_id == "warmfleet/absent"),
        "{missing}"
    );

    // Instances are handed the same endpoints.
    let asg = aws_sdk_autoscaling::Client::from_conf(
        aws_sdk_autoscaling::config::Builder::from(&config)
            .endpoint_url(&url)
            .build(),
    );
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("g")
        .min_size(1)
        .max_size(1)
        .send()
        .await
        .unwrap();
    let env_file = state.path().join("instances");
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let env = loop {
        let found = std::fs::read_dir(&env_file)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("env.txt")).ok())
            .filter(|t| t.contains("AWS_EC2_METADATA_SERVICE_ENDPOINT"));
        if let Some(env) = found {
            break env;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the instance never wrote env.txt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        env.contains(&format!("AWS_ENDPOINT_URL_SECRETS_MANAGER={secrets_url}")),
        "{env}"
    );
    assert!(
        env.contains(&format!("AWS_ENDPOINT_URL_AUTO_SCALING={url}")),
        "{env}"
    );

    let pid = nix::unistd::Pid::from_raw(world.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(world.wait().unwrap().success());
    assert!(
        reqwest::get(&secrets_url).await.is_err(),
        "moto stopped with the world"
    );
}
