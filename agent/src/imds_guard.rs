//! Keeps the runner user (and every job it runs) away from the instance metadata service:
//! an nftables rule by owner, loaded before any listener starts. The agent, as root, keeps
//! IMDS; a job cannot take the instance role's credentials from it.
//!
//! The rule rejects what the runner user sends to IMDS's addresses (169.254.169.254 and
//! fd00:ec2::254, every port) and to the endpoint `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! names, if any (the testbed's). It lives in a table of its own, replaced as a whole each
//! time the agent starts, so it follows `runner.user`.

use crate::error::AgentError;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::process::{Command, Stdio};

/// The table the rule lives in.
pub const TABLE: &str = "warmfleet_imds";

/// IMDS's own addresses on EC2 (IPv4, and IPv6 on Nitro instances).
const IMDS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Where IMDS answers: an address, and a port when only one of its ports is IMDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// IMDS's addresses, and the endpoint an `AWS_EC2_METADATA_SERVICE_ENDPOINT` value names.
pub fn targets(endpoint: Option<&str>) -> Result<Vec<Target>, AgentError> {
    targets_of(endpoint).map_err(AgentError::ImdsGuard)
}

fn targets_of(endpoint: Option<&str>) -> Result<Vec<Target>, String> {
    let mut all: Vec<Target> = IMDS.iter().map(|&ip| Target { ip, port: None }).collect();
    if let Some(url) = endpoint.filter(|e| !e.trim().is_empty()) {
        let parsed = url::Url::parse(url)
            .map_err(|e| format!("AWS_EC2_METADATA_SERVICE_ENDPOINT {url:?}: {e}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("AWS_EC2_METADATA_SERVICE_ENDPOINT {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let found: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("AWS_EC2_METADATA_SERVICE_ENDPOINT {url:?}: {e}"))?
            .collect();
        for a in found {
            if !all.iter().any(|t| t.ip == a.ip() && t.port.is_none()) {
                all.push(Target {
                    ip: a.ip(),
                    port: Some(a.port()),
                });
            }
        }
    }
    Ok(all)
}

/// The nftables script: the table created (so that deleting it never fails), deleted and
/// made again with one rule per target, in one transaction.
pub fn ruleset(uid: u32, targets: &[Target]) -> String {
    let mut rules = String::new();
    for t in targets {
        let family = match t.ip {
            IpAddr::V4(_) => "ip",
            IpAddr::V6(_) => "ip6",
        };
        let port = t
            .port
            .map_or_else(String::new, |p| format!(" tcp dport {p}"));
        rules.push_str(&format!(
            "    meta skuid {uid} {family} daddr {}{port} counter reject\n",
            t.ip
        ));
    }
    format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  \
         chain output {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// Loads the script with `nft -f -`; the error carries nft's own words.
pub fn apply(script: &str) -> Result<(), AgentError> {
    load(script).map_err(AgentError::ImdsGuard)
}

fn load(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft (the nftables package) could not run: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft's input")?
        .write_all(script.as_bytes())
        .map_err(|e| format!("writing nft's input: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the rule: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_imds_everywhere_and_the_endpoint_named_by_its_port() {
        assert_eq!(targets(None).unwrap().len(), 2);
        assert_eq!(targets(Some("")).unwrap().len(), 2);
        let t = targets(Some("http://127.0.0.1:40123")).unwrap();
        assert_eq!(
            t[2],
            Target {
                ip: "127.0.0.1".parse().unwrap(),
                port: Some(40123)
            }
        );
        // IMDS itself, named: already blocked on every port.
        assert_eq!(targets(Some("http://169.254.169.254")).unwrap().len(), 2);
        let v6 = targets(Some("http://[fd00:ec2::254]/")).unwrap();
        assert_eq!(v6.len(), 2);
        assert!(targets(Some("not a url")).is_err());
        let script = ruleset(1001, &t);
        assert!(script.starts_with(
            "table inet warmfleet_imds\ndelete table inet warmfleet_imds\ntable inet warmfleet_imds {"
        ));
        assert!(
            script.contains("meta skuid 1001 ip daddr 169.254.169.254 counter reject\n"),
            "{script}"
        );
        assert!(script.contains("meta skuid 1001 ip6 daddr fd00:ec2::254 counter reject\n"));
        assert!(
            script.contains("meta skuid 1001 ip daddr 127.0.0.1 tcp dport 40123 counter reject\n")
        );
        assert!(script.contains("type filter hook output priority 0; policy accept;"));
    }
}
