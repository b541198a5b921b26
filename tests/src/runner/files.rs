//! `.runner` and `.credentials`: what `config.sh` writes and the listener reads.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerFile {
    pub agent_id: u64,
    pub agent_name: String,
    pub pool_id: u64,
    pub pool_name: String,
    pub server_url: String,
    pub git_hub_url: String,
    pub work_folder: String,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub disable_update: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialsFile {
    pub scheme: String,
    pub data: CredentialData,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialData {
    pub credential: String,
}

pub const RUNNER: &str = ".runner";
pub const CREDENTIALS: &str = ".credentials";

/// Writes `value` as JSON, replacing any older file, as the real runner's `SaveObject`
/// does: with the process's umask deciding the mode (0644 under the usual 022).
pub fn write<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a key as the real runner writes `.credentials_rsaparams`: `write`, then
/// `chmod 600` (readable by others in between, under a permissive umask).
pub fn write_key<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write(path, value)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
}

pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The server base (`scheme://host[:port]`) of a runner URL.
pub fn server_of(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).with_context(|| format!("reading the URL {url:?}"))?;
    let host = parsed.host_str().context("the URL has no host")?;
    Ok(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    })
}
