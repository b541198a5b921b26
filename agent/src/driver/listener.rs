//! The runner under the driver: configuring it and starting its listener, following the
//! listener's output and end, removing the runner.

use super::calls::bounded;
use super::{Driver, Follow, Msg};
use crate::error::AgentError;
use crate::listener_log::{read_new_lines, LogChanges};
use crate::machine::Event;
use crate::runner::{self, Line, Runner};
use secrecy::SecretString;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{info, warn};
use warmfleet_core::instance_secret::{InstanceSecret, RunnerCredential};
use warmfleet_core::naming;
use warmfleet_core::ports::SecretStore;

impl Driver {
    pub(super) fn jit_config(&self) -> Option<SecretString> {
        match self.credential.as_ref().map(|c| &c.credential) {
            Some(RunnerCredential::JitConfig {
                encoded_jit_config, ..
            }) => Some(encoded_jit_config.clone()),
            _ => None,
        }
    }

    /// Configures the runner unless it is, then starts its listener. (A listener that
    /// outlived the agent is followed by `Watch`, never started twice.)
    pub(super) async fn register(&mut self) -> Result<(), AgentError> {
        let (identity, _, secrets) = self.aws()?;
        let identity = identity.clone();
        if self.credential.is_none() {
            // After a restart: the credential last written for this launch.
            let id = self.secret_id(&identity);
            let text = bounded(
                self.settings.timeouts.call,
                "GetSecretValue",
                secrets.get(&id),
            )
            .await?
            .ok_or_else(|| AgentError::Secret {
                id: id.clone(),
                reason: "is gone".into(),
            })?;
            let parsed = InstanceSecret::parse(&text).map_err(|reason| AgentError::Secret {
                id: id.clone(),
                reason,
            })?;
            self.credential = Some(parsed);
        }
        let Some(secret) = self.credential.as_ref() else {
            return Err(AgentError::Secret {
                id: self.secret_id(&identity),
                reason: "holds no credential".into(),
            });
        };
        self.record.credential_used = Some(secret.issued_at);
        let name = naming::runner_name(&identity.instance_id);
        if let RunnerCredential::RegistrationToken { token, .. } = &secret.credential {
            if !self.runner.configured() {
                let labels = naming::runner_labels(
                    &self.settings.deployment,
                    &identity.group,
                    &identity.instance_id,
                    &self.settings.labels,
                );
                let out = self
                    .runner
                    .configure(
                        &self.settings.github_url,
                        &name,
                        &labels,
                        self.settings.runner_group.as_deref(),
                        token,
                    )
                    .await
                    .map_err(|source| AgentError::Runner {
                        what: "config.sh",
                        source,
                    })?;
                if let Some(m) = runner::version_refused(&out.output) {
                    return Err(AgentError::VersionRefused(m));
                }
                if !out.success {
                    return Err(AgentError::Configure(last_lines(&out.output)));
                }
                info!(instance_id = %identity.instance_id, runner = %name, "runner configured");
            }
        }
        self.record.runner_name = Some(name);
        let jit = self.jit_config();
        let pid = self.start_listener(jit.as_ref())?;
        let tx = self.tx.clone();
        let listen = self.settings.timeouts.listen;
        tokio::spawn(async move {
            tokio::time::sleep(listen).await;
            let _ = tx.send(Msg::ListenDeadline(pid));
        });
        Ok(())
    }

    pub(super) fn start_listener(&mut self, jit: Option<&SecretString>) -> Result<u32, AgentError> {
        let log = self.settings.state_dir.join("listener.log");
        let offset = std::fs::metadata(&log).map_or(0, |m| m.len());
        self.log_offset.store(offset, Ordering::Relaxed);
        let child = self
            .runner
            .start_listener(&log, jit)
            .map_err(|source| AgentError::Runner {
                what: "the listener",
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        info!(pid, "listener started");
        self.record.listener_pid = Some(pid);
        self.record.listener_started = runner::started_at(pid);
        self.save();
        self.watch(Follow::Child(child));
        Ok(pid)
    }

    /// Whether the listener the record names still runs.
    pub(super) fn listener_running(&self) -> bool {
        match (self.record.listener_pid, self.record.listener_started) {
            (Some(pid), Some(started)) => runner::still_running(pid, started),
            _ => false,
        }
    }

    /// Follows a listener: its output lines and its exit become events.
    pub(super) fn watch(&self, listener: Follow) {
        let log = self.settings.state_dir.join("listener.log");
        let offset = self.log_offset.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let read = |offset: &AtomicU64| {
                for line in read_new_lines(&log, offset) {
                    if let Some(l) = runner::parse_line(&line) {
                        let event = match l {
                            Line::Listening => Event::Listening,
                            Line::JobRunning => Event::JobRunning,
                            Line::JobFinished => Event::JobFinished,
                            Line::VersionRefused(m) => {
                                Event::Failed(AgentError::VersionRefused(m).to_string())
                            }
                        };
                        let _ = tx.send(Msg::Event(event));
                    }
                }
            };
            let changes = LogChanges::new(&log);
            let (pid, code) = match listener {
                Follow::Child(mut child) => {
                    let pid = child.id();
                    let code = loop {
                        tokio::select! {
                            status = child.wait() => break status.ok().and_then(|s| s.code()),
                            _ = changes.next() => read(&offset),
                        }
                    };
                    (pid, code)
                }
                // Not our child: no exit code, only its end.
                Follow::Adopted { pid, started } => {
                    while runner::still_running(pid, started) {
                        read(&offset);
                        changes.next().await;
                    }
                    (Some(pid), None)
                }
            };
            read(&offset);
            info!(?pid, ?code, "listener exited");
            let _ = tx.send(Msg::Event(Event::ListenerExited(code)));
        });
    }
}

fn last_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

pub(super) async fn remove(runner: &Runner, token: Option<SecretString>) {
    let with_token = token.is_some();
    match runner.remove(token.as_ref()).await {
        Ok(out) if out.success => info!(with_token, "runner removed"),
        Ok(out) => {
            warn!(output = %last_lines(&out.output), "config.sh remove failed; removing the local configuration only (the sweep deletes the registration)");
            let _ = runner.remove(None).await;
        }
        Err(e) => warn!("config.sh remove could not run: {e}"),
    }
    if !with_token {
        warn!(
            "no remove token in the secret: the registration is left to the deregistration sweep"
        );
    }
}
