//! warmfleet-agent: the systemd service on every runner instance. Its state machine, driver
//! and commands are built in issue 6; until then the binary says so and fails.

fn main() {
    eprintln!("warmfleet-agent: not built yet (the agent is issue 6)");
    std::process::exit(2);
}
