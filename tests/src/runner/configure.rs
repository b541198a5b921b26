//! `config.sh` and `config.sh remove`. Every option may also come from
//! `ACTIONS_RUNNER_INPUT_<NAME>`, as the real runner allows, so a token need not be in argv.

use super::files::{self, CredentialData, CredentialsFile, RunnerFile};
use crate::github::runner_api::{RegisterRequest, Registered, UnregisterRequest};
use anyhow::Context;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct ConfigureArgs {
    /// Configure without prompting (the fake never prompts, so this is required).
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_UNATTENDED")]
    pub unattended: bool,
    /// Organisation, repository or enterprise URL.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_URL")]
    pub url: Option<String>,
    /// Registration token.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Runner name (default: the host name).
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_NAME")]
    pub name: Option<String>,
    /// Extra labels, comma-separated.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_LABELS")]
    pub labels: Option<String>,
    /// Runner group name.
    #[arg(long = "runnergroup", env = "ACTIONS_RUNNER_INPUT_RUNNERGROUP")]
    pub runner_group: Option<String>,
    /// Work folder, relative to the runner directory.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_WORK")]
    pub work: Option<String>,
    /// Replace a runner of the same name.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_REPLACE")]
    pub replace: bool,
    /// Take one job, then unregister.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_EPHEMERAL")]
    pub ephemeral: bool,
    /// Never self-update.
    #[arg(long = "disableupdate", env = "ACTIONS_RUNNER_INPUT_DISABLEUPDATE")]
    pub disable_update: bool,
    /// Register without the default labels (self-hosted, OS, architecture).
    #[arg(
        long = "no-default-labels",
        env = "ACTIONS_RUNNER_INPUT_NO_DEFAULT_LABELS"
    )]
    pub no_default_labels: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// Remove token.
    #[arg(long, env = "ACTIONS_RUNNER_INPUT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Remove the local configuration only, without telling GitHub.
    #[arg(long)]
    pub local: bool,
}

/// Prints the real runner's error form and returns its exit code.
fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("Error: {message}");
    1
}

async fn post_json<B: serde::Serialize>(url: &str, body: &B) -> anyhow::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("connecting to {url}"))
}

async fn server_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or(text);
    format!("{message} ({status})")
}

pub async fn configure(root: &Path, args: ConfigureArgs) -> anyhow::Result<i32> {
    if root.join(files::RUNNER).exists() {
        return Ok(fail(
            "Cannot configure the runner because it is already configured. To reconfigure the \
             runner, run 'config.cmd remove' or './config.sh remove' first.",
        ));
    }
    if !args.unattended {
        return Ok(fail(
            "Interactive configuration is not supported here: pass --unattended.",
        ));
    }
    let Some(url) = args.url else {
        return Ok(fail(
            "Invalid configuration provided for url. Terminating unattended configuration.",
        ));
    };
    let Some(token) = args.token else {
        return Ok(fail(
            "Invalid configuration provided for token. Terminating unattended configuration.",
        ));
    };
    let name = match args.name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "runner".into()),
    };
    let server = match files::server_of(&url) {
        Ok(s) => s,
        Err(e) => return Ok(fail(format!("{e:#}"))),
    };
    let labels: Vec<String> = args
        .labels
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    println!("\n--------------------------------------------------------------------------------");
    println!("|        ____ _ _   _   _       _          _        _   _                      |");
    println!("|                       Self-hosted runner registration                        |");
    println!("--------------------------------------------------------------------------------\n");
    println!("# Authentication\n");
    let request = RegisterRequest {
        url: url.clone(),
        token,
        name: name.clone(),
        labels,
        runner_group: args.runner_group,
        replace: args.replace,
        ephemeral: args.ephemeral,
        no_default_labels: args.no_default_labels,
        version: super::VERSION.into(),
    };
    let resp = post_json(&format!("{server}/_runner/register"), &request).await?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        // As the real runner reports a refusal of its registration: the answer's body as
        // it came, then .NET's own words; exit 1.
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(text);
        eprintln!("Http response code: NotFound from 'POST {server}/actions/runner-registration'");
        eprintln!("{body}");
        eprintln!("Response status code does not indicate success: 404 (Not Found).");
        return Ok(1);
    }
    if !resp.status().is_success() {
        let message = server_message(resp).await;
        return Ok(fail(format!("Http response code: {message}")));
    }
    let registered: Registered = resp.json().await.context("reading the registration")?;
    println!("√ Connected to GitHub\n");
    println!("# Runner Registration\n");
    println!("√ Runner successfully added");
    // The fake keeps its secret in `.credentials`, where the real runner keeps its key in
    // `.credentials_rsaparams`: written the way that file is.
    files::write_key(
        &root.join(files::CREDENTIALS),
        &CredentialsFile {
            scheme: "OAuth".into(),
            data: CredentialData {
                credential: registered.credential,
            },
        },
    )?;
    files::write(
        &root.join(files::RUNNER),
        &RunnerFile {
            agent_id: registered.runner_id,
            agent_name: registered.runner_name,
            pool_id: 1,
            pool_name: "Default".into(),
            server_url: server,
            git_hub_url: url,
            work_folder: args.work.unwrap_or_else(|| "_work".into()),
            ephemeral: args.ephemeral,
            disable_update: args.disable_update,
        },
    )?;
    println!("√ Runner connection is good\n");
    println!("# Runner settings\n");
    println!("√ Settings Saved.\n");
    Ok(0)
}

/// Deletes the local configuration files.
pub fn remove_local(root: &Path) -> anyhow::Result<()> {
    for name in [files::CREDENTIALS, files::RUNNER] {
        match std::fs::remove_file(root.join(name)) {
            Ok(()) => println!("√ Removed {name}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {name}")),
        }
    }
    Ok(())
}

pub async fn remove(root: &Path, args: RemoveArgs) -> anyhow::Result<i32> {
    let runner_path = root.join(files::RUNNER);
    if !runner_path.exists() {
        println!("The runner is not configured: nothing to remove.");
        return Ok(0);
    }
    if !args.local {
        let settings: RunnerFile = files::read(&runner_path)?;
        let Some(token) = args.token else {
            return Ok(fail(
                "Invalid configuration provided for token. Terminating unattended configuration.",
            ));
        };
        println!("\n# Runner removal\n");
        let request = UnregisterRequest {
            url: settings.git_hub_url.clone(),
            token,
            runner_id: settings.agent_id,
        };
        let resp = post_json(
            &format!("{}/_runner/unregister", settings.server_url),
            &request,
        )
        .await?;
        if !resp.status().is_success() {
            let message = server_message(resp).await;
            return Ok(fail(format!("Failed to remove the runner: {message}")));
        }
        println!("√ Runner removed successfully");
    }
    remove_local(root)?;
    Ok(0)
}
