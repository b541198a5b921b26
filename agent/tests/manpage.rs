//! The man pages the package installs (packaging/agent/man/: warmfleet-agent.1 and one per
//! command) are generated from the command line's own definition, and must not fall behind
//! it. To regenerate: `WARMFLEET_BLESS=1 cargo test -p warmfleet-agent --test manpage`.

use clap::CommandFactory;
use std::collections::BTreeMap;
use std::path::Path;
use warmfleet_agent::cli::Cli;

fn pages(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(e.path()).unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_packaged_man_pages_are_the_command_lines_own() {
    let fresh = tempfile::tempdir().expect("a temporary directory");
    clap_mangen::generate_to(Cli::command(), fresh.path()).expect("rendering the man pages");
    let generated = pages(fresh.path());
    let names: Vec<&str> = generated.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "warmfleet-agent-drain.1",
            "warmfleet-agent-hook.1",
            "warmfleet-agent-run.1",
            "warmfleet-agent-sleep-hook.1",
            "warmfleet-agent-status.1",
            "warmfleet-agent.1",
        ]
    );
    let packaged_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent/man");
    if std::env::var_os("WARMFLEET_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&packaged_dir);
        std::fs::create_dir_all(&packaged_dir).expect("the man directory");
        clap_mangen::generate_to(Cli::command(), &packaged_dir).expect("writing the man pages");
    }
    assert!(
        pages(&packaged_dir) == generated,
        "{} is stale: WARMFLEET_BLESS=1 cargo test -p warmfleet-agent --test manpage",
        packaged_dir.display()
    );
}
