//! The core GitHub client against the fake GitHub, both real processes speaking HTTP.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use secrecy::ExposeSecret;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use warmfleet_core::github::{
    GithubClient, GithubCredential, GithubError, GithubTarget, JitRequest, RunnerStatus,
};

#[tokio::test]
async fn an_app_installation_token_is_minted_once_and_reused() {
    let key = fixture("github-app-test-key.pem");
    let gh = Github::start(&["--app-id", "42", "--app-key", key.to_str().unwrap()]);
    let target = GithubTarget::parse(&gh.org_url(), None).unwrap();
    let client = GithubClient::connect(target, &app_credential(42), fast_retries(), deadline(10))
        .await
        .expect("connect as the app");
    for _ in 0..10 {
        let token = client
            .registration_token(deadline(10))
            .await
            .expect("token");
        assert!(!token.token.expose_secret().is_empty());
    }
    let requests = gh.requests().await;
    let by = |method: &str, suffix: &str, caller: &str| {
        requests
            .iter()
            .filter(|r| {
                r["method"] == method
                    && r["caller"] == caller
                    && r["path"].as_str().unwrap().ends_with(suffix)
                    && r["status"].as_u64().unwrap() < 300
            })
            .count()
    };
    assert_eq!(by("GET", "/orgs/acme/installation", "app"), 1);
    assert_eq!(by("POST", "/access_tokens", "app"), 1);
    assert_eq!(by("POST", "/registration-token", "installation"), 10);
    assert_eq!(client.api_calls(), 11);
}

#[tokio::test]
async fn an_expiring_installation_token_is_replaced() {
    let key = fixture("github-app-test-key.pem");
    // octocrab renews a token with less than 30 s left: this one is stale after 2 s.
    let gh = Github::start(&[
        "--app-id",
        "7",
        "--app-key",
        key.to_str().unwrap(),
        "--token-ttl",
        "32s",
    ]);
    let target = GithubTarget::parse(&gh.org_url(), None).unwrap();
    let client = GithubClient::connect(target, &app_credential(7), fast_retries(), deadline(10))
        .await
        .unwrap();
    client.registration_token(deadline(10)).await.unwrap();
    client.registration_token(deadline(10)).await.unwrap();
    assert_eq!(gh.count("POST", "/access_tokens").await, 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.registration_token(deadline(10)).await.unwrap();
    assert_eq!(gh.count("POST", "/access_tokens").await, 2);
}

#[tokio::test]
async fn a_jwt_signed_by_another_key_is_refused() {
    let key = fixture("github-app-test-key.pem");
    let gh = Github::start(&["--app-id", "42", "--app-key", key.to_str().unwrap()]);
    let pem = std::fs::read_to_string(fixture("other-test-key.pem")).unwrap();
    let target = GithubTarget::parse(&gh.org_url(), None).unwrap();
    let credential = GithubCredential::App {
        app_id: 42,
        private_key: pem.into(),
    };
    let err = GithubClient::connect(target, &credential, fast_retries(), deadline(10))
        .await
        .err()
        .expect("a foreign key must not authenticate");
    assert!(matches!(err, GithubError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_and_never_echoed() {
    let gh = Github::start(&[]);
    let target = GithubTarget::parse(&gh.org_url(), None).unwrap();
    let credential = GithubCredential::Token("ghp_wrongsecretvalue".to_owned().into());
    let client = GithubClient::connect(target, &credential, fast_retries(), deadline(10))
        .await
        .unwrap();
    let err = client.registration_token(deadline(10)).await.unwrap_err();
    assert!(matches!(err, GithubError::Unauthorized { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("wrongsecretvalue"));
}

#[tokio::test]
async fn two_hundred_fifty_runners_are_listed_in_three_requests_then_conditionally() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    let token = client.registration_token(deadline(10)).await.unwrap();
    let token = token.token.expose_secret();
    for i in 0..240 {
        gh.register_with(token, &format!("runner-{i:03}"), &["warmfleet"], false)
            .await;
    }
    for i in 0..10 {
        gh.register_with(token, &format!("gpu-{i}"), &["warmfleet", "gpu"], true)
            .await;
    }
    let list_calls = || async { gh.count("GET", "/orgs/acme/actions/runners").await };
    let before = list_calls().await;
    let runners = client.list_runners(None, deadline(10)).await.unwrap();
    assert_eq!(runners.len(), 250);
    assert_eq!(list_calls().await - before, 3);
    let mut ids: Vec<u64> = runners.iter().map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 250, "no runner twice");
    assert!(runners
        .iter()
        .all(|r| r.status == RunnerStatus::Offline && !r.busy));

    // Nothing changed: the same three pages come back 304, free of rate limit.
    let rate_before = gh.get("/rate_limit").await["resources"]["core"]["remaining"].as_u64();
    let again = client
        .list_runners(Some("GPU"), deadline(10))
        .await
        .unwrap();
    assert_eq!(again.len(), 10, "label filter is case-insensitive");
    assert!(again.iter().all(|r| r.has_label("self-hosted")));
    let statuses: Vec<u64> = gh
        .requests()
        .await
        .iter()
        .filter(|r| r["path"] == "/orgs/acme/actions/runners")
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(&statuses[statuses.len() - 3..], &[304, 304, 304]);
    let rate_after = gh.get("/rate_limit").await["resources"]["core"]["remaining"].as_u64();
    assert_eq!(rate_before, rate_after);

    let found = client
        .find_runner("runner-123", deadline(10))
        .await
        .unwrap();
    assert_eq!(found.map(|r| r.name).as_deref(), Some("runner-123"));
    assert!(client
        .find_runner("runner-999", deadline(10))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn deleting_a_busy_runner_is_a_typed_error_distinct_from_gone() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    let (other, _) = gh.register(&client, "i-0other").await;
    let refused = gh
        .post(
            "/_runner/sessions",
            json!({ "runner_id": other, "credential": "wrong" }),
        )
        .await;
    assert_eq!(refused.status(), 401);
    let (id, sid, job) = gh.busy_runner(&client, "i-0busy", 60.0).await;

    let listed = client
        .find_runner("i-0busy", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert!(listed.busy);
    assert_eq!(listed.status, RunnerStatus::Online);
    let err = client.delete_runner(id, deadline(10)).await.unwrap_err();
    assert!(
        matches!(err, GithubError::RunnerBusy { runner_id } if runner_id == id),
        "{err}"
    );

    // Labels can go while it is busy: no further job can match it.
    let left = client.remove_custom_labels(id, deadline(10)).await.unwrap();
    assert!(left.is_empty(), "{left:?}");

    let finished = gh
        .post(
            &format!("/_runner/sessions/{sid}/jobs/{job}/finish"),
            json!({ "succeeded": true, "shutdown": false, "message": null }),
        )
        .await;
    assert_eq!(finished.status(), 204);
    client
        .delete_runner(id, deadline(10))
        .await
        .expect("idle runner deleted");
    let err = client.delete_runner(id, deadline(10)).await.unwrap_err();
    assert!(matches!(err, GithubError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_502_burst_is_retried_to_success_and_a_longer_one_reported() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    gh.fault(json!({ "path": "/orgs/acme/actions/runners/registration-token", "status": 502, "count": 3 }))
        .await;
    client
        .registration_token(deadline(10))
        .await
        .expect("retried to success");
    assert_eq!(client.api_calls(), 4);

    gh.fault(json!({ "path": "/orgs/acme/actions/runners/registration-token", "status": 503, "count": 9 }))
        .await;
    let err = client.registration_token(deadline(10)).await.unwrap_err();
    assert!(
        matches!(err, GithubError::Server { attempts: 5, status, .. } if status == 503),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_github_is_a_transport_error_after_bounded_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/acme", listener.local_addr().unwrap());
    drop(listener);
    let target = GithubTarget::parse(&url, None).unwrap();
    let client = GithubClient::connect(
        target,
        &GithubCredential::Token(PAT.to_owned().into()),
        fast_retries(),
        deadline(10),
    )
    .await
    .unwrap();
    let err = client.registration_token(deadline(10)).await.unwrap_err();
    assert!(
        matches!(err, GithubError::Transport { attempts: 5, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_within_the_deadline_and_reported_past_it() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    let path = "/orgs/acme/actions/runners/registration-token";

    gh.fault(json!({ "path": path, "status": 429, "retry_after": 1 }))
        .await;
    let started = Instant::now();
    client
        .registration_token(deadline(10))
        .await
        .expect("waited out");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry-after honoured"
    );

    gh.fault(json!({ "path": path, "status": 403, "ratelimit_reset_in": 1 }))
        .await;
    client
        .registration_token(deadline(10))
        .await
        .expect("primary limit waited out");

    gh.fault(json!({ "path": path, "status": 429, "retry_after": 30 }))
        .await;
    let err = client.registration_token(deadline(3)).await.unwrap_err();
    assert!(
        matches!(&err, GithubError::RateLimited { wait, .. } if *wait == Duration::from_secs(30)),
        "{err}"
    );
    assert!(err.is_retryable());
    // Reported, not slept through: the client did not wait 30 s.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn the_fakes_own_rate_limit_is_enforced_and_read_by_the_client() {
    let gh = Github::start(&["--rate-limit", "3"]);
    let client = gh.pat_client(fast_retries()).await;
    for _ in 0..3 {
        client.registration_token(deadline(10)).await.unwrap();
    }
    let err = client.registration_token(deadline(2)).await.unwrap_err();
    assert!(matches!(err, GithubError::RateLimited { .. }), "{err}");
    // Reading the limit is free, even when it is spent: GitHub charges nothing for it.
    let rate = client.rate_limit(deadline(10)).await.unwrap().unwrap();
    assert_eq!((rate.limit, rate.remaining), (3, 0));
    assert!(rate.reset > chrono::Utc::now().timestamp());
    assert_eq!(client.api_calls(), 4, "three tokens and the refused one");
}

#[tokio::test]
async fn a_server_without_rate_limits_says_so_and_costs_nothing_to_ask() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    // GitHub Enterprise Server with rate limiting off answers 404 here.
    gh.fault(json!({ "path": "/rate_limit", "status": 404, "count": 1 }))
        .await;
    assert_eq!(client.rate_limit(deadline(10)).await.unwrap(), None);
    let rate = client.rate_limit(deadline(10)).await.unwrap().unwrap();
    assert_eq!((rate.limit, rate.remaining), (5000, 5000));
    assert_eq!(client.api_calls(), 0);
}

#[tokio::test]
async fn org_repo_enterprise_and_ghes_url_forms() {
    let gh = Github::start(&["--repo", "acme/app", "--enterprise", "big"]);
    let pat = GithubCredential::Token(PAT.to_owned().into());
    // A host other than github.com: the API is at /api/v3, as on GitHub Enterprise Server.
    for (url, path) in [
        (
            format!("{}/acme", gh.url),
            "/orgs/acme/actions/runners/registration-token",
        ),
        (
            format!("{}/acme/app", gh.url),
            "/repos/acme/app/actions/runners/registration-token",
        ),
        (
            format!("{}/enterprises/big", gh.url),
            "/enterprises/big/actions/runners/registration-token",
        ),
    ] {
        let target = GithubTarget::parse(&url, None).unwrap();
        assert_eq!(target.api_url.as_str(), format!("{}/api/v3", gh.url));
        let client = GithubClient::connect(target, &pat, fast_retries(), deadline(10))
            .await
            .unwrap();
        client
            .registration_token(deadline(10))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        client
            .list_runners(None, deadline(10))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(gh.count("POST", path).await, 1, "{url}");
    }
    // An explicit API root, as api.github.com is for github.com.
    let target = GithubTarget::parse("https://github.com/acme", Some(&gh.url)).unwrap();
    let client = GithubClient::connect(target, &pat, fast_retries(), deadline(10))
        .await
        .unwrap();
    client.remove_token(deadline(10)).await.unwrap();
    let root_calls = gh
        .requests()
        .await
        .iter()
        .filter(|r| r["path"] == "/orgs/acme/actions/runners/remove-token")
        .count();
    assert_eq!(root_calls, 1);

    // Unknown scopes are GitHub's 404; an app cannot manage an enterprise.
    let target = GithubTarget::parse(&format!("{}/nobody", gh.url), None).unwrap();
    let client = GithubClient::connect(target, &pat, fast_retries(), deadline(10))
        .await
        .unwrap();
    let err = client.registration_token(deadline(10)).await.unwrap_err();
    assert!(matches!(err, GithubError::NotFound { .. }), "{err}");
    let target = GithubTarget::parse(&format!("{}/enterprises/big", gh.url), None).unwrap();
    let err = GithubClient::connect(target, &app_credential(1), fast_retries(), deadline(10))
        .await
        .err()
        .expect("an app for an enterprise is a configuration error");
    assert!(
        matches!(err, GithubError::Config(ref m) if m.contains("manage_runners:enterprise")),
        "{err}"
    );
}

#[tokio::test]
async fn a_jit_config_registers_an_offline_ephemeral_runner_and_names_clash() {
    let gh = Github::start(&[]);
    let client = gh.pat_client(fast_retries()).await;
    let request = JitRequest {
        name: "i-0jit".into(),
        runner_group_id: 1,
        labels: vec!["warmfleet".into(), "ci".into()],
        work_folder: "_work".into(),
    };
    let jit = client
        .generate_jit_config(&request, deadline(10))
        .await
        .unwrap();
    assert_eq!(jit.runner.name, "i-0jit");
    assert_eq!(jit.runner.ephemeral, Some(true));
    assert!(!jit.encoded_jit_config.expose_secret().is_empty());
    let listed = client
        .find_runner("i-0jit", deadline(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listed.status, RunnerStatus::Offline);
    assert!(listed.has_label("ci"));
    let err = client
        .generate_jit_config(&request, deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GithubError::Rejected { status, .. } if status == 409),
        "{err}"
    );

    // GitHub answers 422 when runner_group_id is missing.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/orgs/acme/actions/runners/generate-jitconfig",
            gh.url
        ))
        .bearer_auth(PAT)
        .json(&json!({ "name": "x", "labels": ["a"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}
