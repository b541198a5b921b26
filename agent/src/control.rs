//! How the agent's commands reach the running service: one JSON line each way over a Unix
//! socket in the state directory. The job hooks (run by the runner user) may only report
//! jobs; everything else is for root (or the agent's own user); nobody else gets in. The
//! socket is the runner group's (mode 0660), and the server checks each peer's uid again
//! before it reads a byte, bounds the read in size and time, and backs off when `accept`
//! fails (out of descriptors), so a local user can neither hold nor spin it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tracing::warn;

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

/// How long a client has to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The most a request may be.
const MAX_REQUEST: u64 = 4096;

/// Why a connection's request was not read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no request within {0:?}")]
    Late(Duration),
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a request: {0}")]
    NotARequest(#[from] serde_json::Error),
}

/// Reads one request from a connection (at most 4 KiB, within `limit`).
pub async fn read_request(
    stream: &mut UnixStream,
    limit: Duration,
) -> Result<Request, RequestError> {
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(&mut *stream, MAX_REQUEST));
    tokio::time::timeout(limit, reader.read_line(&mut line))
        .await
        .map_err(|_| RequestError::Late(limit))??;
    Ok(serde_json::from_str(&line)?)
}

/// Who the server answers: root, the agent's own user, and the runner user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peers {
    /// The agent's effective uid.
    pub agent: u32,
    /// The runner user's uid, when the agent switches to it.
    pub runner: Option<u32>,
}

impl Peers {
    /// Whether a peer may connect at all (`None`: its credentials are unknown).
    pub fn may_connect(&self, peer: Option<u32>) -> bool {
        match peer {
            Some(u) => u == 0 || u == self.agent || Some(u) == self.runner,
            None => false,
        }
    }

    /// Whether a peer may ask for `request`: the runner user only reports jobs.
    pub fn may_ask(&self, peer: Option<u32>, request: &Request) -> bool {
        match peer {
            Some(u) if u == 0 || u == self.agent => true,
            Some(u) => Some(u) == self.runner && request.for_runner(),
            None => false,
        }
    }
}

/// The longest pause after a failed `accept`.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Serves the control socket: each allowed request (read within `read_timeout`) goes to
/// `handle` with a sender for its reply (`handle` answers false when the agent is going
/// away).
pub async fn serve<H>(listener: UnixListener, peers: Peers, read_timeout: Duration, handle: H)
where
    H: Fn(Request, oneshot::Sender<Reply>) -> bool + Clone + Send + 'static,
{
    let mut backoff = Duration::ZERO;
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                // Out of descriptors, most likely: accepting again at once would spin.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                warn!(error = %e, pause = ?backoff, "control socket: accept failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let peer = stream.peer_cred().map(|c| c.uid()).ok();
        if !peers.may_connect(peer) {
            // Not a byte read, nothing held: the connection closes here.
            continue;
        }
        let handle = handle.clone();
        tokio::spawn(async move {
            let request = match read_request(&mut stream, read_timeout).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = write_reply(&mut stream, &Reply::err(e.to_string())).await;
                    return;
                }
            };
            if !peers.may_ask(peer, &request) {
                let message = format!("uid {peer:?} may not ask for {request:?}");
                let _ = write_reply(&mut stream, &Reply::err(message)).await;
                return;
            }
            let (reply_tx, reply_rx) = oneshot::channel();
            if !handle(request, reply_tx) {
                return;
            }
            if let Ok(reply) = reply_rx.await {
                let _ = write_reply(&mut stream, &reply).await;
            }
        });
    }
}

pub async fn write_reply(stream: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u32 = 0;
    const RUNNER: u32 = 1001;
    const OTHER: u32 = 1002;

    #[test]
    fn root_and_the_agent_ask_anything_the_runner_only_reports_jobs_others_nothing() {
        let hook = Request::Hook {
            hook: JobHook::JobStarted,
        };
        let peers = Peers {
            agent: ROOT,
            runner: Some(RUNNER),
        };
        for r in [&hook, &Request::Drain, &Request::Status] {
            assert!(peers.may_connect(Some(ROOT)) && peers.may_ask(Some(ROOT), r));
            assert!(!peers.may_ask(Some(OTHER), r));
            assert!(!peers.may_ask(None, r));
        }
        assert!(peers.may_connect(Some(RUNNER)));
        assert!(peers.may_ask(Some(RUNNER), &hook));
        assert!(!peers.may_ask(Some(RUNNER), &Request::Drain));
        assert!(!peers.may_ask(Some(RUNNER), &Request::Status));
        assert!(!peers.may_connect(Some(OTHER)));
        assert!(!peers.may_connect(None));
        // An agent that runs as the runner user itself (no switch).
        let same = Peers {
            agent: RUNNER,
            runner: None,
        };
        assert!(same.may_ask(Some(RUNNER), &Request::Drain));
        assert!(!same.may_connect(Some(OTHER)));
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_and_a_later_one_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket(dir.path());
        let listener = UnixListener::bind(&path).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let peers = Peers {
            agent: me,
            runner: None,
        };
        let read_timeout = Duration::from_millis(200);
        tokio::spawn(serve(
            listener,
            peers,
            read_timeout,
            |_, reply: oneshot::Sender<Reply>| reply.send(Reply::ok("fine")).is_ok(),
        ));
        let mut silent = UnixStream::connect(&path).await.unwrap();
        let mut answer = String::new();
        BufReader::new(&mut silent)
            .read_line(&mut answer)
            .await
            .unwrap();
        let reply: Reply = serde_json::from_str(&answer).unwrap();
        assert!(
            !reply.ok && reply.message.contains("no request within"),
            "{answer}"
        );
        let reply = ask(&path, &Request::Status, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reply.message, "fine");
    }
}
