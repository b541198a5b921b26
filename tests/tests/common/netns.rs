//! A network namespace of its own for a machine (`ip netns`), where the testbed's servers on
//! the host's loopback answer at the same addresses: for each port, a listener bound inside
//! the namespace (by a thread that enters it; a socket keeps the namespace it was made in)
//! and, for every connection it accepts, one made to the host's `127.0.0.1` and the bytes
//! copied both ways. The machine can then load firewall rules without touching the host.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Netns {
    name: String,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

impl Netns {
    /// A new namespace with its loopback up and `ports` forwarded to the host's. Needs root
    /// and a tokio runtime.
    pub fn new(ports: &[u16]) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "warmfleet-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let path = PathBuf::from("/run/netns").join(&name);
        let wanted = ports.to_vec();
        let listeners = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the namespace's file");
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the namespace");
            wanted
                .iter()
                .map(|p| {
                    let l = std::net::TcpListener::bind(("127.0.0.1", *p))
                        .unwrap_or_else(|e| panic!("binding {p} in the namespace: {e}"));
                    l.set_nonblocking(true).unwrap();
                    (*p, l)
                })
                .collect::<Vec<_>>()
        })
        .join()
        .expect("the namespace's listeners");
        let forwarders = listeners
            .into_iter()
            .map(|(port, l)| {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                tokio::spawn(async move {
                    while let Ok((mut inside, _)) = l.accept().await {
                        tokio::spawn(async move {
                            if let Ok(mut host) =
                                tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                            {
                                let _ = tokio::io::copy_bidirectional(&mut inside, &mut host).await;
                            }
                        });
                    }
                })
            })
            .collect();
        Netns { name, forwarders }
    }

    /// The namespace's file, for `systemd-nspawn --network-namespace-path`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ports of every `http(s)://127.0.0.1:PORT` in `text`.
pub fn loopback_ports(text: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = text
        .match_indices("://127.0.0.1:")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
