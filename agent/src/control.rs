//! How the agent's commands reach the running service: one JSON line each way over a Unix
//! socket in the state directory. The job hooks (run by the runner user) may only report
//! jobs; everything else is for root (or the agent's own user).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub const SOCKET: &str = "agent.sock";

/// Environment variable carrying the socket's path to the runner's job hooks.
pub const SOCKET_ENV: &str = "WARMFLEET_AGENT_SOCKET";

pub fn socket(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum JobHook {
    JobStarted,
    JobCompleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SleepPhase {
    Pre,
    Post,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Hook { hook: JobHook },
    Sleep { phase: SleepPhase },
    Drain,
    Status,
}

impl Request {
    /// Whether the runner user may send it.
    pub fn for_runner(&self) -> bool {
        matches!(self, Request::Hook { .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::record::Record>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: message.into(),
            status: None,
        }
    }
    pub fn err(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            message: message.into(),
            status: None,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the agent is not running (nothing listens on {0})")]
    NotRunning(PathBuf),
    #[error("no answer from the agent within {0:?}")]
    Timeout(Duration),
    #[error("talking to the agent on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Sends one request and waits up to `timeout` for the answer.
pub async fn ask(path: &Path, request: &Request, timeout: Duration) -> Result<Reply, AskError> {
    let io = |source| AskError::Io {
        path: path.to_owned(),
        source,
    };
    let exchange = async {
        let mut stream = match UnixStream::connect(path).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(AskError::NotRunning(path.to_owned()))
            }
            Err(e) => return Err(io(e)),
        };
        let mut line = serde_json::to_vec(request).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(io)?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .await
            .map_err(io)?;
        serde_json::from_str(&answer).map_err(|e| io(e.into()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AskError::Timeout(timeout))?
}

/// Reads one request from a connection (at most 4 KiB).
pub async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(&mut *stream, 4096));
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("not a request: {e}"))
}

pub async fn write_reply(stream: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}
