//! Instances as processes. Each gets a root directory, its own IMDSv2 endpoint, and runs the
//! `--instance-command` in its own process group. Hibernation runs the root's systemd sleep
//! hooks (`usr/lib/systemd/system-sleep/*` with `pre hibernate`) and stops the group
//! (SIGSTOP); resume continues it (SIGCONT) and runs the hooks with `post hibernate`.

use super::imds::{self, MetadataSource};
use crate::aws::autoscaling::model::Effect;
use crate::aws::ssm::Ended;
use anyhow::Context;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A program to run inside an instance: its root, its environment, its IMDS.
pub fn command_in(
    info: &InstanceInfo,
    env: &[(String, String)],
    program: impl AsRef<std::ffi::OsStr>,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.current_dir(&info.root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &info.imds)
        .env("WARMFLEET_INSTANCE_ROOT", &info.root);
    c
}

/// Runs an SSM script in an instance, in the instance's process group (so it sleeps when
/// the instance hibernates and ends when it stops), until it exits, times out (real time)
/// or is cancelled.
pub async fn run_script(
    info: &InstanceInfo,
    env: &[(String, String)],
    script: &str,
    timeout: Duration,
    cancel: CancellationToken,
) -> Ended {
    let spawn = |group: i32| {
        command_in(info, env, "sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(group)
            .kill_on_drop(true)
            .spawn()
    };
    let group = info.pid.map_or(0, |p| p as i32);
    // The instance's group is gone when its own process has ended: then a group of its own.
    let child = spawn(group).or_else(|_| spawn(0));
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Ended::Exited {
                code: 127,
                stdout: String::new(),
                stderr: format!("failed to run shell script: {e}"),
            }
        }
    };
    let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    enum Why {
        Exit(Option<i32>),
        Timeout,
        Cancel,
    }
    let why = tokio::select! {
        status = child.wait() => Why::Exit(status.ok().and_then(|s| s.code())),
        _ = tokio::time::sleep(timeout) => Why::Timeout,
        _ = cancel.cancelled() => Why::Cancel,
    };
    if !matches!(why, Why::Exit(_)) {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    // A background child that keeps the pipes open does not hold the answer back.
    let text = |h: tokio::task::JoinHandle<String>| async move {
        tokio::time::timeout(Duration::from_secs(1), h)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (stdout, stderr) = (text(out).await, text(err).await);
    match why {
        // Killed by a signal (the instance stopped): no exit code, as SSM reports -1.
        Why::Exit(code) => Ended::Exited {
            code: code.unwrap_or(-1),
            stdout,
            stderr,
        },
        Why::Timeout => Ended::TimedOut { stdout, stderr },
        Why::Cancel => Ended::Cancelled,
    }
}

/// What tests and operators can see of an instance's process.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub root: PathBuf,
    pub imds: String,
    pub pid: Option<u32>,
    /// `running`, `hibernated` or `stopped`.
    pub process: &'static str,
}

pub struct Driver {
    dir: PathBuf,
    command: Option<String>,
    /// Records only: no root, IMDS or process.
    bare: bool,
    /// Environment of every instance process (endpoints, region, test credentials).
    env: Vec<(String, String)>,
    source: Arc<dyn MetadataSource>,
    pub info: Arc<Mutex<BTreeMap<String, InstanceInfo>>>,
    children: BTreeMap<String, tokio::process::Child>,
    servers: BTreeMap<String, CancellationToken>,
}

const SLEEP_HOOKS: &str = "usr/lib/systemd/system-sleep";

impl Driver {
    pub fn new(
        dir: PathBuf,
        command: Option<String>,
        bare: bool,
        env: Vec<(String, String)>,
        source: Arc<dyn MetadataSource>,
    ) -> Self {
        Driver {
            dir,
            command,
            bare,
            env,
            source,
            info: Arc::new(Mutex::new(BTreeMap::new())),
            children: BTreeMap::new(),
            servers: BTreeMap::new(),
        }
    }

    fn set(&self, id: &str, f: impl FnOnce(&mut InstanceInfo)) {
        if let Some(i) = self
            .info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            f(i);
        }
    }

    fn get(&self, id: &str) -> Option<InstanceInfo> {
        self.info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub async fn apply(&mut self, effect: &Effect) {
        let result = match effect {
            Effect::Start { instance } => self.start(instance).await,
            Effect::Hibernate { instance } => self.hibernate(instance).await,
            Effect::Resume { instance } => self.resume(instance).await,
            Effect::Stop { instance } => self.stop(instance).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(?effect, error = %format!("{e:#}"), "instance effect failed");
        }
    }

    async fn start(&mut self, id: &str) -> anyhow::Result<()> {
        let root = self.dir.join("instances").join(id);
        if self.bare {
            let info = InstanceInfo {
                id: id.to_owned(),
                root,
                imds: String::new(),
                pid: None,
                process: "running",
            };
            self.info
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_owned(), info);
            return Ok(());
        }
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding an IMDS port")?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let app = imds::router(id.to_owned(), self.source.clone());
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await
        });
        self.servers.insert(id.to_owned(), stop);
        let mut pid = None;
        if let Some(command) = &self.command {
            let console =
                std::fs::File::create(root.join("console.log")).context("creating console.log")?;
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&root)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url)
                .env("WARMFLEET_INSTANCE_ROOT", &root)
                .stdin(Stdio::null())
                .stdout(console.try_clone()?)
                .stderr(console)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the instance command for {id}"))?;
            pid = child.id();
            self.children.insert(id.to_owned(), child);
        }
        self.info.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id.to_owned(),
            InstanceInfo {
                id: id.to_owned(),
                root,
                imds: url,
                pid,
                process: "running",
            },
        );
        Ok(())
    }

    fn signal(&self, id: &str, signal: Signal) {
        if let Some(pid) = self.get(id).and_then(|i| i.pid) {
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
    }

    async fn sleep_hooks(&self, id: &str, phase: &str) {
        let Some(info) = self.get(id) else { return };
        let env = &self.env;
        let dir = info.root.join(SLEEP_HOOKS);
        let mut hooks: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => return,
        };
        hooks.sort();
        for hook in hooks {
            let run = command_in(&info, env, &hook)
                .args([phase, "hibernate"])
                .status();
            match tokio::time::timeout(Duration::from_secs(30), run).await {
                Ok(Ok(status)) if status.success() => {}
                other => tracing::warn!(hook = %hook.display(), ?other, "sleep hook failed"),
            }
        }
    }

    async fn hibernate(&mut self, id: &str) -> anyhow::Result<()> {
        self.sleep_hooks(id, "pre").await;
        self.set(id, |i| i.process = "hibernated");
        self.signal(id, Signal::SIGSTOP);
        Ok(())
    }

    async fn resume(&mut self, id: &str) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGCONT);
        self.set(id, |i| i.process = "running");
        self.sleep_hooks(id, "post").await;
        Ok(())
    }

    async fn stop(&mut self, id: &str) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGCONT);
        self.signal(id, Signal::SIGTERM);
        if let Some(mut child) = self.children.remove(id) {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                self.signal(id, Signal::SIGKILL);
                let _ = child.wait().await;
            }
        }
        if let Some(server) = self.servers.remove(id) {
            server.cancel();
        }
        self.set(id, |i| i.process = "stopped");
        Ok(())
    }

    /// Ends every instance process (the world is shutting down).
    pub async fn shutdown(&mut self) {
        let ids: Vec<String> = self.children.keys().cloned().collect();
        for id in ids {
            let _ = self.stop(&id).await;
        }
    }
}
