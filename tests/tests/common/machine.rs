//! A Debian machine with a real systemd, for the package and cloud-init tests: a minimal
//! bookworm root made by debootstrap (with cloud-init added), cached between runs under
//! `/var/cache/warmfleet` (or `$WARMFLEET_MACHINE_CACHE`: CI starts from an empty one), copied for each machine and booted with `systemd-nspawn -b`. The
//! machine shares the host's network, so the testbed's servers on loopback are reachable,
//! or, `isolate`d, has a network namespace of its own (with `CAP_NET_ADMIN` in it: its
//! firewall rules stay there) where the given ports of the host's loopback are forwarded.
//! Needs root, debootstrap and systemd-container (`make system-deps` installs them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// Where the base root is kept; the name changes whenever what goes into it does.
const BASE_NAME: &str = "nspawn-bookworm-cloud-init-5";

fn base_path() -> String {
    let dir = std::env::var("WARMFLEET_MACHINE_CACHE")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/var/cache/warmfleet".to_owned());
    format!("{dir}/{BASE_NAME}")
}
/// What a machine's root holds besides debootstrap's minimal base.
/// (man-db: `systemd-analyze verify` checks a unit's `Documentation=man:` pages with it;
/// curl and locales: cloud-init's install script downloads with the one, its locale module
/// needs the other, as on any Debian cloud image; nftables: the package depends on it, and
/// an isolated machine has no mirror to fetch it from.)
const INCLUDE: &str = "systemd,systemd-sysv,dbus,ca-certificates,man-db,curl,locales,nftables";

/// The cached base root, made on first use (about a minute; serialised across processes).
pub fn base_root() -> PathBuf {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let base_path = base_path();
    let base = PathBuf::from(&base_path);
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(format!("{base_path}.lock")).unwrap();
    let _flock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    if base.join(".complete").exists() {
        return base;
    }
    let building = PathBuf::from(format!("{base_path}.building"));
    let _ = std::fs::remove_dir_all(&building);
    eprintln!("making the machines' root {base_path} (debootstrap, once)");
    run_ok(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}")])
            .args(["bookworm", building.to_str().unwrap()]),
    );
    // cloud-init through apt: debootstrap's resolver misses virtual packages it needs.
    run_ok(nspawn(&building).args([
        "sh",
        "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
         --no-install-recommends cloud-init >/dev/null && apt-get clean",
    ]));
    std::fs::write(building.join(".complete"), "").unwrap();
    let _ = std::fs::remove_dir_all(&base);
    std::fs::rename(&building, &base).unwrap();
    base
}

/// `systemd-nspawn` on a root, not booted: one command, its output piped.
fn nspawn(root: &Path) -> Command {
    let mut c = Command::new("systemd-nspawn");
    // No host system bus to register with; keep the caller's unit (a test, a CI job).
    c.args(["--quiet", "--keep-unit", "--register=no", "--pipe", "-D"])
        .arg(root);
    c
}

fn run_ok(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A machine: its own copy of the base root, booted or not. Powered off and removed when
/// dropped, unless `WARMFLEET_KEEP_MACHINES` is set (then its directory is printed).
pub struct Machine {
    pub root: PathBuf,
    boot: Option<Child>,
    leader: Option<u32>,
    netns: Option<super::netns::Netns>,
}

impl Machine {
    pub fn new(name: &str) -> Machine {
        let base = base_root();
        let root = PathBuf::from(format!(
            "/var/tmp/warmfleet-machines/{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.parent().unwrap()).unwrap();
        run_ok(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&base)
                .arg(&root),
        );
        Machine {
            root,
            boot: None,
            leader: None,
            netns: None,
        }
    }

    /// Puts a host file into the machine's root at `path` (absolute inside the machine).
    pub fn copy_in(&self, from: &Path, path: &str) {
        let to = self.inside(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{} -> {path}: {e}", from.display()));
    }

    /// A path inside the machine, seen from the host.
    pub fn inside(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Runs a shell script in the machine: in its booted system if it runs, else in its
    /// root (as an image build would). The output, whatever the exit status.
    pub fn sh(&self, script: &str) -> Output {
        let mut c = match self.leader {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-a", "--"]);
                c.args([
                    "env",
                    "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8",
                ]);
                c
            }
            None => nspawn(&self.root),
        };
        c.args(["sh", "-c", script]).stdin(Stdio::null());
        c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"))
    }

    /// `sh`, which must succeed; its standard output.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the machine: {script}\n{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Gives the machine a network namespace of its own, where these ports of the host's
    /// loopback are forwarded (call before `boot`).
    pub fn isolate(&mut self, ports: &[u16]) {
        assert!(self.boot.is_none(), "already booted");
        self.netns = Some(super::netns::Netns::new(ports));
    }

    /// Boots the machine and waits until systemd reports it up (running or degraded).
    pub async fn boot(&mut self) {
        assert!(self.boot.is_none(), "already booted");
        let console = std::fs::File::create(self.root.with_extension("console")).unwrap();
        let mut nspawn = Command::new("systemd-nspawn");
        nspawn.args([
            "--quiet",
            "--keep-unit",
            "--register=no",
            "--boot",
            "--console=passive",
        ]);
        if let Some(ns) = &self.netns {
            nspawn
                .arg(format!("--network-namespace-path={}", ns.path().display()))
                .arg("--capability=CAP_NET_ADMIN");
        }
        let child = nspawn
            .arg("-D")
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        let nspawn = child.id();
        self.boot = Some(child);
        // The container's init is systemd-nspawn's child once it runs systemd (before, the
        // child is nspawn's own set-up process).
        let until = Instant::now() + Duration::from_secs(60);
        let state = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
                    .unwrap_or_default();
            self.leader = children.split_whitespace().find_map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                (comm.trim() == "systemd").then(|| pid.parse().ok())?
            });
            let state = match self.leader {
                Some(_) => self.sh("systemctl is-system-running --wait").stdout_text(),
                None => String::new(),
            };
            let state = state.trim().to_owned();
            if state == "running" || state == "degraded" {
                break state;
            }
            assert!(
                Instant::now() < until,
                "the machine never came up ({state:?}): {}",
                self.console()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if state == "degraded" {
            eprintln!(
                "machine degraded: {}",
                self.sh_ok("systemctl --failed --no-legend")
            );
        }
    }

    /// The PID (on the host) of the booted machine's init.
    pub fn leader(&self) -> u32 {
        self.leader.expect("the machine is booted")
    }

    /// What the machine printed on its console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.root.with_extension("console")).unwrap_or_default()
    }

    /// `journalctl` lines of a unit, as JSON objects.
    pub fn journal(&self, unit: &str) -> Vec<serde_json::Value> {
        self.sh_ok(&format!("journalctl -u {unit} -o json --no-pager"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The value of unit properties (`systemctl show -p`).
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// Waits until `check` holds of a unit property; its last value.
    pub async fn until_property(
        &self,
        unit: &str,
        property: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let until = Instant::now() + within;
        loop {
            let value = self.property(unit, property);
            if check(&value) {
                return value;
            }
            assert!(
                Instant::now() < until,
                "{unit} {property} is still {value:?}\n{}",
                self.sh("journalctl -b --no-pager | tail -40").stdout_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Powers the machine off and waits for it (then kills it if it hangs).
    pub fn poweroff(&mut self) {
        let Some(mut child) = self.boot.take() else {
            return;
        };
        if self.leader.is_some() {
            let _ = self.sh("systemctl poweroff --no-block");
            self.leader = None;
        }
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.poweroff();
        if std::env::var_os("WARMFLEET_KEEP_MACHINES").is_some() {
            let _ = writeln!(std::io::stderr(), "machine kept: {}", self.root.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(self.root.with_extension("console"));
    }
}

/// Standard output as text.
pub trait OutputText {
    fn stdout_text(&self) -> String;
}

impl OutputText for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}
