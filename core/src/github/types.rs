//! The shapes GitHub's runner endpoints answer with, as far as warmfleet reads them.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// A self-hosted runner as `GET .../actions/runners` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub os: String,
    pub status: RunnerStatus,
    pub busy: bool,
    #[serde(default)]
    pub ephemeral: Option<bool>,
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
}

impl Runner {
    /// Whether the runner carries `label` (GitHub compares labels case-insensitively).
    pub fn has_label(&self, label: &str) -> bool {
        self.labels
            .iter()
            .any(|l| l.name.eq_ignore_ascii_case(label))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerLabel {
    #[serde(default)]
    pub id: Option<u64>,
    pub name: String,
    /// `read-only` (set by the runner: self-hosted, OS, architecture) or `custom`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerStatus {
    Online,
    Offline,
    #[serde(other)]
    Unknown,
}

/// A registration or remove token: one hour of life, never to be logged.
#[derive(Debug, Clone, Deserialize)]
pub struct RunnerToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// The caller's primary rate limit as `GET /rate_limit` tells it (the `core` resource), or
/// an answer's `x-ratelimit-*` headers: requests per hour, what is left of this window, and
/// when it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    /// When the window resets, in seconds since the epoch.
    pub reset: i64,
}

/// What `generate-jitconfig` needs.
#[derive(Debug, Clone, Serialize)]
pub struct JitRequest {
    pub name: String,
    pub runner_group_id: u64,
    pub labels: Vec<String>,
    pub work_folder: String,
}

/// A just-in-time runner: registered already, its single-use configuration for
/// `run.sh --jitconfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct JitConfig {
    pub runner: Runner,
    pub encoded_jit_config: SecretString,
}
