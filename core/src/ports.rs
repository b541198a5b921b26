//! The narrow interfaces the domain talks through. The aws-sdk adapters implement them for
//! real; unit tests of pure logic may implement them in memory.

use async_trait::async_trait;
use secrecy::SecretString;

/// A failure of a port's backing service, with what a caller needs to decide on a retry.
#[derive(Debug, thiserror::Error)]
#[error("{service} {operation} on {resource}: {message}")]
pub struct PortError {
    pub service: &'static str,
    pub operation: &'static str,
    pub resource: String,
    pub message: String,
    /// Whether trying again later can help (throttling, 5xx, network).
    pub retryable: bool,
}

/// Secrets Manager, as far as warmfleet uses it.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The current value of a secret, or `None` when it does not exist (or is being deleted).
    async fn get(&self, id: &str) -> Result<Option<SecretString>, PortError>;
}

/// The result a lifecycle hook is completed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Continue,
    Abandon,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Continue => "CONTINUE",
            HookResult::Abandon => "ABANDON",
        }
    }
}

/// What became of a completion or heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Done,
    /// The hook was not waiting (completed already, timed out, or never fired). Events are
    /// delivered at least once, so this is an expected outcome, not an error.
    NotPending,
}

/// An instance as its Auto Scaling group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub instance_id: String,
    pub group: String,
    /// `Pending:Wait`, `InService`, `Terminating:Wait`...
    pub lifecycle_state: String,
    pub protected_from_scale_in: bool,
}

/// Auto Scaling, as far as warmfleet uses it: lifecycle hooks and scale-in protection.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    async fn complete(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
        result: HookResult,
    ) -> Result<Completion, PortError>;

    /// Pushes the hook's timeout out by its heartbeat timeout.
    async fn heartbeat(
        &self,
        group: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<Completion, PortError>;

    async fn set_protection(
        &self,
        group: &str,
        instance_id: &str,
        protected: bool,
    ) -> Result<(), PortError>;

    /// The instance's group, lifecycle state and protection; `None` once it left its group.
    async fn instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, PortError>;
}
