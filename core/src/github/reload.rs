//! `Reloading`: the GitHub client of a long-lived process (a warm Lambda) that reads its
//! credential again when GitHub refuses it. A personal access token or App key rotated in
//! Secrets Manager then takes effect at the next call that fails with 401, not at the next
//! cold start (record_metric runs every minute and keeps its function warm for hours).

use super::{GithubClient, GithubCredential, GithubError, GithubTarget, RetryPolicy};
use super::{JitConfig, JitRequest, RateLimit, Runner, RunnerToken};
use crate::ports::{RunnerRegistry, SecretStore};
use async_trait::async_trait;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::RwLock;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

pub struct Reloading<S> {
    secrets: S,
    secret_id: String,
    target: GithubTarget,
    policy: RetryPolicy,
    current: RwLock<Arc<GithubClient>>,
    /// One reload at a time: calls refused together reload once.
    reloading: Mutex<()>,
    /// Calls made by the clients replaced so far.
    retired_calls: AtomicU64,
}

impl<S: SecretStore> Reloading<S> {
    /// Reads the credential from `secret_id` and connects.
    pub async fn connect(
        secrets: S,
        secret_id: &str,
        target: GithubTarget,
        policy: RetryPolicy,
        deadline: Instant,
    ) -> Result<Self, GithubError> {
        let client = Self::client(&secrets, secret_id, &target, &policy, deadline).await?;
        Ok(Reloading {
            secrets,
            secret_id: secret_id.to_owned(),
            target,
            policy,
            current: RwLock::new(Arc::new(client)),
            reloading: Mutex::new(()),
            retired_calls: AtomicU64::new(0),
        })
    }

    async fn client(
        secrets: &S,
        secret_id: &str,
        target: &GithubTarget,
        policy: &RetryPolicy,
        deadline: Instant,
    ) -> Result<GithubClient, GithubError> {
        let credential = GithubCredential::load(secrets, secret_id).await?;
        GithubClient::connect(target.clone(), &credential, policy.clone(), deadline).await
    }

    /// The client in use.
    fn now(&self) -> Arc<GithubClient> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A client built from the secret as it is now, unless another call already replaced
    /// `refused`.
    async fn reload(
        &self,
        refused: &Arc<GithubClient>,
        deadline: Instant,
    ) -> Result<Arc<GithubClient>, GithubError> {
        let _one = self.reloading.lock().await;
        let current = self.now();
        if !Arc::ptr_eq(&current, refused) {
            return Ok(current);
        }
        let fresh = Arc::new(
            Self::client(
                &self.secrets,
                &self.secret_id,
                &self.target,
                &self.policy,
                deadline,
            )
            .await?,
        );
        self.retired_calls
            .fetch_add(current.api_calls(), Ordering::Relaxed);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        info!(secret = %self.secret_id, "GitHub refused the credential: read it again from its secret");
        Ok(fresh)
    }

    /// Runs `call`; if GitHub refuses the credential, once more with it read again.
    async fn with_reload<T, F, Fut>(&self, deadline: Instant, call: F) -> Result<T, GithubError>
    where
        F: Fn(Arc<GithubClient>) -> Fut,
        Fut: Future<Output = Result<T, GithubError>>,
    {
        let client = self.now();
        match call(client.clone()).await {
            Err(GithubError::Unauthorized { .. }) => match self.reload(&client, deadline).await {
                Ok(fresh) => call(fresh).await,
                Err(e) => {
                    warn!(error = %e, "reading the GitHub credential again failed");
                    Err(e)
                }
            },
            other => other,
        }
    }
}

#[async_trait]
impl<S: SecretStore> RunnerRegistry for Reloading<S> {
    async fn registration_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError> {
        self.with_reload(
            deadline,
            |c| async move { c.registration_token(deadline).await },
        )
        .await
    }

    async fn remove_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError> {
        self.with_reload(deadline, |c| async move { c.remove_token(deadline).await })
            .await
    }

    async fn jit_config(
        &self,
        request: &JitRequest,
        deadline: Instant,
    ) -> Result<JitConfig, GithubError> {
        self.with_reload(deadline, |c| async move {
            c.generate_jit_config(request, deadline).await
        })
        .await
    }

    async fn runners(
        &self,
        label: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Runner>, GithubError> {
        self.with_reload(deadline, |c| async move {
            c.list_runners(label, deadline).await
        })
        .await
    }

    async fn runner_named(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Runner>, GithubError> {
        self.with_reload(
            deadline,
            |c| async move { c.find_runner(name, deadline).await },
        )
        .await
    }

    async fn delete_runner(&self, runner_id: u64, deadline: Instant) -> Result<(), GithubError> {
        self.with_reload(deadline, |c| async move {
            c.delete_runner(runner_id, deadline).await
        })
        .await
    }

    async fn remove_labels(&self, runner_id: u64, deadline: Instant) -> Result<(), GithubError> {
        self.with_reload(deadline, |c| async move {
            RunnerRegistry::remove_labels(c.as_ref(), runner_id, deadline).await
        })
        .await
    }

    fn api_calls(&self) -> u64 {
        self.retired_calls.load(Ordering::Relaxed) + self.now().api_calls()
    }

    fn rate_limit_seen(&self) -> Option<RateLimit> {
        self.now().rate_limit_seen()
    }

    async fn rate_limit(&self, deadline: Instant) -> Result<Option<RateLimit>, GithubError> {
        self.with_reload(deadline, |c| async move { c.rate_limit(deadline).await })
            .await
    }
}
