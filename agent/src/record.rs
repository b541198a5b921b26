//! What the agent keeps across restarts, in `<state_dir>/state.json`: its state, who it is,
//! the newest credential it used (by issue time, never the token), its listener, and what
//! `warmfleet-agent status` shows. Written atomically after every change; it holds no secret.

use crate::error::AgentError;
use crate::machine::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Record {
    pub state: State,
    pub instance_id: Option<String>,
    pub group: Option<String>,
    /// The runner's name once it is registered (the instance id).
    pub runner_name: Option<String>,
    /// When the newest credential the agent used was issued: only a newer one is used next.
    pub credential_used: Option<DateTime<Utc>>,
    /// The running agent's pid.
    pub agent_pid: Option<u32>,
    /// The listener's pid while one runs, and when it started (so that a later process
    /// reusing the pid is not taken for it).
    pub listener_pid: Option<u32>,
    pub listener_started: Option<u64>,
    /// How far the agent has read the listener's log.
    pub listener_log_offset: u64,
    pub job_in_progress: bool,
    /// Marked busy: protected from scale-in, or recorded busy in the runner table.
    pub protected: bool,
    /// Whether the instance went back to the warm pool after its drain (reuse on scale-in).
    pub back_to_pool: bool,
    /// The last lifecycle hook the agent completed, and how.
    pub last_hook: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl Default for Record {
    fn default() -> Record {
        Record {
            state: State::Identifying,
            instance_id: None,
            group: None,
            runner_name: None,
            credential_used: None,
            agent_pid: None,
            listener_pid: None,
            listener_started: None,
            listener_log_offset: 0,
            job_in_progress: false,
            protected: false,
            back_to_pool: false,
            last_hook: None,
            last_error: None,
            updated_at: Utc::now(),
        }
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The record in `state_dir`; `None` when there is none yet.
pub fn load(state_dir: &Path) -> Result<Option<Record>, AgentError> {
    let file = path(state_dir);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| AgentError::State { path: file, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::File { path: file, source }),
    }
}

/// Writes the record: a temporary file, synced, then renamed over the old one.
pub fn save(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    let file = path(state_dir);
    let tmp = state_dir.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_a_broken_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let r = Record {
            state: State::Failed { reason: "x".into() },
            ..Record::default()
        };
        save(dir.path(), &r).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(r));
        std::fs::write(path(dir.path()), "{").unwrap();
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("state.json"));
    }
}
