//! Secrets Manager is moto's: a pinned `moto_server`, found on PATH or installed on first
//! use into a venv of its own under the user's cache directory.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The pins, shared with the project's own Python tests.
const REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");

pub struct Moto {
    pub url: String,
    child: tokio::process::Child,
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// `moto_server` from PATH, else from the cached venv, installing it there the first time.
async fn find_or_install() -> anyhow::Result<PathBuf> {
    if let Some(found) = on_path("moto_server") {
        return Ok(found);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: cannot place moto's venv")?;
    let venv = cache.join("warmfleet").join("moto-venv");
    let server = venv.join("bin").join("moto_server");
    if server.is_file() {
        return Ok(server);
    }
    eprintln!(
        "warmfleet-testbed: installing moto into {} (first use; about a minute)",
        venv.display()
    );
    std::fs::create_dir_all(&venv).with_context(|| format!("creating {}", venv.display()))?;
    let status = tokio::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .await
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed ({status})", venv.display());
    }
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)?;
    let status = tokio::process::Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status()
        .await
        .context("running pip")?;
    if !status.success() || !server.is_file() {
        bail!("installing moto into {} failed ({status})", venv.display());
    }
    Ok(server)
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub async fn start(explicit: Option<PathBuf>) -> anyhow::Result<Moto> {
        let server = match explicit {
            Some(path) => path,
            None => find_or_install().await?,
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > until {
                bail!("moto did not start listening on {url} within a minute");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Moto { url, child })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
