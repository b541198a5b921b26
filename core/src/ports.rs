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
