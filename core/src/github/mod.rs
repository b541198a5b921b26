//! The GitHub client warmfleet uses for everything it asks of GitHub: registration, remove and
//! JIT tokens, listing and deleting runners, and removing a runner's labels during a drain.
//!
//! `octocrab` does the HTTP and the authentication (including caching a GitHub App's
//! installation token until shortly before it expires); this module adds the scopes
//! (organisation, repository, enterprise), typed errors, bounded retries with backoff and
//! jitter, rate-limit waits up to a caller's deadline, conditional requests and a count of
//! the API calls made; `Reloading` reads the credential again when GitHub refuses it.

mod client;
mod credential;
mod error;
mod reload;
mod retry;
mod target;
mod types;

pub use client::GithubClient;
pub use credential::GithubCredential;
pub use error::GithubError;
pub use reload::Reloading;
pub use retry::RetryPolicy;
pub use target::{GithubTarget, Scope};
pub use types::{JitConfig, JitRequest, RateLimit, Runner, RunnerLabel, RunnerStatus, RunnerToken};
