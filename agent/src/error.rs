//! What can go wrong in the agent's driver, typed (as core's `PortError` is): the state
//! machine gets the message (`Event::Failed`), the journal and `warmfleet-agent status` the
//! same words.

use std::path::PathBuf;
use std::time::Duration;
use warmfleet_core::imds::ImdsError;
use warmfleet_core::ports::PortError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An AWS call failed (the error names the service, operation and resource).
    #[error(transparent)]
    Aws(#[from] PortError),
    /// An AWS call did not answer within `timeouts.call`.
    #[error("{call}: no answer within {}", humantime::format_duration(*.within))]
    NoAnswer {
        call: &'static str,
        within: Duration,
    },
    /// IMDS could not say who the instance is (at start).
    #[error("IMDS cannot tell who this instance is: {0}")]
    Identity(#[source] ImdsError),
    /// IMDS could not say where Auto Scaling takes the instance.
    #[error("IMDS cannot tell where this instance is going: {0}")]
    Target(#[source] ImdsError),
    /// An action needs the instance's identity, which IMDS has not given yet.
    #[error("the instance's identity is not known yet")]
    NotIdentified,
    /// The instance's secret is not there, or not a secret warmfleet wrote.
    #[error("the secret {id}: {reason}")]
    Secret { id: String, reason: String },
    /// `config.sh` or the listener could not be run at all.
    #[error("{what} could not run: {source}")]
    Runner {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `config.sh` failed; its last lines.
    #[error("config.sh failed: {0}")]
    Configure(String),
    /// GitHub refuses the runner's version (its message), which only a new AMI cures.
    #[error(
        "GitHub refuses this runner's version ({0}): the runner in the AMI is too old (it \
         registers with --disableupdate); bake an AMI with a current actions runner \
         (docs/usage/install.md, \"Upgrading the runner\")"
    )]
    VersionRefused(String),
    /// A file or directory the agent needs.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent's state file is there but cannot be read back.
    #[error("{}: unreadable ({source})", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `runner.user` cannot be the runner's user.
    #[error("runner.user {user:?}: {reason}")]
    RunnerUser { user: String, reason: String },
    /// Closing IMDS to the runner user failed.
    #[error("closing IMDS to runner.user: {0} (runner.block_imds = false leaves it open)")]
    ImdsGuard(String),
    /// Setting up before the event loop (the runner user, the state, the socket...).
    #[error("{0}")]
    Setup(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_says_what_failed_in_words_an_operator_can_act_on() {
        let late = AgentError::NoAnswer {
            call: "GetSecretValue",
            within: Duration::from_secs(30),
        };
        assert_eq!(late.to_string(), "GetSecretValue: no answer within 30s");
        let refused = AgentError::VersionRefused(
            "Runner version v2.330.0 is deprecated and cannot receive messages.".into(),
        );
        assert!(refused
            .to_string()
            .starts_with("GitHub refuses this runner's version (Runner version v2.330.0"));
        assert!(refused.to_string().contains("Upgrading the runner"));
        let gone = AgentError::Secret {
            id: "warmfleet/runners/i-0abc".into(),
            reason: "is gone".into(),
        };
        assert_eq!(
            gone.to_string(),
            "the secret warmfleet/runners/i-0abc: is gone"
        );
    }
}
