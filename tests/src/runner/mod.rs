//! The fake actions runner: a runner directory with the real runner's layout, scripts, flags,
//! files, exit codes and job hooks, as far as warmfleet can observe them.
//!
//! `config.sh` and `run.sh` are shell scripts like the real ones; they call
//! `bin/Runner.Listener`, which here is `warmfleet-testbed runner listener`, and the listener
//! starts `bin/Runner.Worker` (`warmfleet-testbed runner worker`) for each job.

mod configure;
mod files;
mod listener;
mod worker;

pub use configure::{configure, remove, ConfigureArgs, RemoveArgs};
pub use listener::{run, RunArgs};
pub use worker::work;

use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The listener's exit codes, as the real runner's `run-helper.sh` reads them.
pub mod exit {
    pub const STOPPED: i32 = 0;
    pub const TERMINATED: i32 = 1;
    pub const RETRYABLE: i32 = 2;
    pub const UPDATING: i32 = 3;
    pub const EPHEMERAL_UPDATING: i32 = 4;
}

/// The version the fake reports, a real runner version of late 2026's range.
pub const VERSION: &str = "2.330.0";

const CONFIG_SH: &str = r#"#!/bin/bash
# Fake of the GitHub Actions runner's config.sh (warmfleet testbed).
root="$(cd "$(dirname "$0")" && pwd)"
if [ "$1" = "remove" ]; then
    shift
    exec "$root/bin/Runner.Listener" remove "$@"
fi
exec "$root/bin/Runner.Listener" configure "$@"
"#;

const RUN_SH: &str = r#"#!/bin/bash
# Fake of the GitHub Actions runner's run.sh and run-helper.sh (warmfleet testbed): runs the
# listener and re-launches it on the exit codes the real helper re-launches on.
root="$(cd "$(dirname "$0")" && pwd)"
pid=
trap '[ -n "$pid" ] && kill -INT "$pid" 2>/dev/null' INT TERM
while :; do
    "$root/bin/Runner.Listener" run "$@" &
    pid=$!
    wait "$pid"; rc=$?
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done
    pid=
    case $rc in
        0) echo "Runner listener exit with 0 return code, stop the service, no retry needed."; exit 0 ;;
        1) echo "Runner listener exit with terminated error, stop the service, no retry needed."; exit 0 ;;
        2) echo "Runner listener exit with retryable error, re-launch runner in 5 seconds." ;;
        3) echo "Runner listener exit because of updating, re-launch runner in 5 seconds." ;;
        4) echo "Runner listener exit because of updating, re-launch ephemeral runner in 5 seconds." ;;
        *) echo "Exiting with unknown error code: $rc"; exit 0 ;;
    esac
    sleep "${WARMFLEET_TESTBED_RELAUNCH_DELAY:-5}"
done
"#;

fn shim(testbed: &Path, command: &str) -> String {
    format!(
        "#!/bin/sh\n# Fake runner binary (warmfleet testbed).\nroot=\"$(cd \"$(dirname \"$0\")/..\" && pwd)\"\nexec '{}' runner {command} --root \"$root\" \"$@\"\n",
        testbed.display().to_string().replace('\'', "'\\''")
    )
}

/// Lays out a runner directory at `dir` whose programs call the `testbed` binary.
pub fn install(dir: &Path, testbed: &Path) -> anyhow::Result<()> {
    let write = |rel: &str, text: &str, mode: u32| -> anyhow::Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        Ok(())
    };
    write("config.sh", CONFIG_SH, 0o755)?;
    write("run.sh", RUN_SH, 0o755)?;
    write("bin/Runner.Listener", &shim(testbed, "listener"), 0o755)?;
    write("bin/Runner.Worker", &shim(testbed, "worker"), 0o755)?;
    write(".env", "", 0o644)?;
    write(".path", "/usr/local/bin:/usr/bin:/bin\n", 0o644)?;
    std::fs::create_dir_all(dir.join("_diag")).context("creating _diag")?;
    Ok(())
}
