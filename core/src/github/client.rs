//! `GithubClient`: the runner operations, over octocrab, with retries and rate-limit waits.

use super::retry::{rate_limit_wait, stated_rate_limit};
use super::types::{JitConfig, JitRequest, RateLimit, Runner, RunnerLabel, RunnerToken};
use super::{GithubCredential, GithubError, GithubTarget, RetryPolicy, Scope};
use http::header::{ETAG, IF_NONE_MATCH, LINK};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use octocrab::models::{AppId, InstallationId};
use octocrab::Octocrab;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::{debug, warn};

/// GitHub lists at most this many runners per page.
const PER_PAGE: u32 = 100;
const RATE_LIMIT_PATH: &str = "/rate_limit";

/// A client for one runner scope (organisation, repository or enterprise).
///
/// Every operation takes a deadline: transient failures are retried and rate limits waited
/// out only while the deadline allows, then the last error is returned.
pub struct GithubClient {
    crab: Octocrab,
    target: GithubTarget,
    policy: RetryPolicy,
    calls: AtomicU64,
    /// The rate limit as the last answer's `x-ratelimit-*` headers stated it.
    seen: Mutex<Option<RateLimit>>,
    /// Last answer per list URL, for conditional requests (a 304 costs no rate limit).
    pages: Mutex<HashMap<String, CachedPage>>,
}

#[derive(Clone)]
struct CachedPage {
    etag: HeaderValue,
    link: Option<HeaderValue>,
    body: String,
}

/// One HTTP answer, whatever its status.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

#[derive(Deserialize)]
struct RunnerPage {
    total_count: u64,
    runners: Vec<Runner>,
}

#[derive(Deserialize)]
struct LabelList {
    labels: Vec<RunnerLabel>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

impl GithubClient {
    /// Builds the client. With a GitHub App, it looks up the app's installation for the
    /// scope once; octocrab then mints installation tokens and reuses each until shortly
    /// before it expires.
    pub async fn connect(
        target: GithubTarget,
        credential: &GithubCredential,
        policy: RetryPolicy,
        deadline: Instant,
    ) -> Result<Self, GithubError> {
        let config = |e: octocrab::Error| GithubError::Config(format!("GitHub client: {e}"));
        let builder = Octocrab::builder()
            .base_uri(target.api_url.as_str())
            .map_err(config)?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(60)));
        let crab = match credential {
            GithubCredential::Token(token) => builder
                .personal_token(token.expose_secret().to_owned())
                .build()
                .map_err(config)?,
            GithubCredential::App {
                app_id,
                private_key,
            } => {
                if let Scope::Enterprise(_) = target.scope {
                    return Err(GithubError::Config(
                        "GitHub Apps cannot manage enterprise runners (GitHub does not accept \
                         installation tokens there): use a personal access token (classic) \
                         with the manage_runners:enterprise scope"
                            .into(),
                    ));
                }
                let key =
                    octocrab::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes())
                        .map_err(|_| {
                            GithubError::Config(
                                "the GitHub App private key is not an RSA PEM key".into(),
                            )
                        })?;
                builder.app(AppId(*app_id), key).build().map_err(config)?
            }
        };
        let mut client = GithubClient {
            crab,
            target,
            policy,
            calls: AtomicU64::new(0),
            seen: Mutex::new(None),
            pages: Mutex::new(HashMap::new()),
        };
        if let GithubCredential::App { .. } = credential {
            let path = format!("{}/installation", client.target.scope.api_prefix());
            let installation: Installation =
                client.json(Method::GET, &path, None, deadline).await?;
            client.crab = client
                .crab
                .installation(InstallationId(installation.id))
                .map_err(config)?;
            debug!(
                installation = installation.id,
                "GitHub App installation found"
            );
        }
        Ok(client)
    }

    /// The rate limit as GitHub's last answer stated it (`None` before any answer, or where
    /// GitHub enforces none).
    pub fn rate_limit_seen(&self) -> Option<RateLimit> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn target(&self) -> &GithubTarget {
        &self.target
    }

    /// How many requests GitHub charged this client's rate limit for (retries included; 304s
    /// and `GET /rate_limit` are free; the installation-token requests octocrab makes on its
    /// own excluded).
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn runners_path(&self) -> String {
        format!("{}/actions/runners", self.target.scope.api_prefix())
    }

    /// The primary rate limit of this credential, as `GET /rate_limit` says (a request
    /// GitHub does not charge); `None` where the server enforces none (GitHub Enterprise
    /// Server with rate limiting off answers 404).
    pub async fn rate_limit(&self, deadline: Instant) -> Result<Option<RateLimit>, GithubError> {
        #[derive(serde::Deserialize)]
        struct Resources {
            core: RateLimit,
        }
        #[derive(serde::Deserialize)]
        struct Status {
            resources: Resources,
        }
        match self
            .json::<Status>(Method::GET, RATE_LIMIT_PATH, None, deadline)
            .await
        {
            Ok(status) => Ok(Some(status.resources.core)),
            Err(GithubError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A registration token for `config.sh` (lives one hour).
    pub async fn registration_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError> {
        let path = format!("{}/registration-token", self.runners_path());
        self.json(Method::POST, &path, None, deadline).await
    }

    /// A remove token for `config.sh remove` (lives one hour).
    pub async fn remove_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError> {
        let path = format!("{}/remove-token", self.runners_path());
        self.json(Method::POST, &path, None, deadline).await
    }

    /// Registers a just-in-time runner and returns its single-use configuration.
    pub async fn generate_jit_config(
        &self,
        request: &JitRequest,
        deadline: Instant,
    ) -> Result<JitConfig, GithubError> {
        let path = format!("{}/generate-jitconfig", self.runners_path());
        let body = serde_json::to_value(request).map_err(|e| GithubError::Decode {
            method: Method::POST,
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.json(Method::POST, &path, Some(&body), deadline).await
    }

    /// Every runner of the scope (all pages of 100), keeping those that carry `label`.
    /// Unchanged pages are fetched conditionally and cost no rate limit.
    pub async fn list_runners(
        &self,
        label: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Runner>, GithubError> {
        let mut runners = self.list_pages(None, deadline).await?;
        if let Some(label) = label {
            runners.retain(|r| r.has_label(label));
        }
        Ok(runners)
    }

    /// The runner called exactly `name`, if GitHub has one.
    pub async fn find_runner(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Runner>, GithubError> {
        let runners = self.list_pages(Some(name), deadline).await?;
        Ok(runners.into_iter().find(|r| r.name == name))
    }

    /// Deletes a runner. A busy runner yields `RunnerBusy`, one already gone `NotFound`.
    pub async fn delete_runner(
        &self,
        runner_id: u64,
        deadline: Instant,
    ) -> Result<(), GithubError> {
        let path = format!("{}/{runner_id}", self.runners_path());
        match self.call(Method::DELETE, &path, None, None, deadline).await {
            Err(GithubError::Rejected { status, .. })
                if status == StatusCode::UNPROCESSABLE_ENTITY =>
            {
                Err(GithubError::RunnerBusy { runner_id })
            }
            other => other.map(|_| ()),
        }
    }

    /// Removes every custom label from a runner (allowed while it runs a job), so that no
    /// further job can be routed to it; returns the labels it still has (the read-only ones).
    pub async fn remove_custom_labels(
        &self,
        runner_id: u64,
        deadline: Instant,
    ) -> Result<Vec<RunnerLabel>, GithubError> {
        let path = format!("{}/{runner_id}/labels", self.runners_path());
        let list: LabelList = self.json(Method::DELETE, &path, None, deadline).await?;
        Ok(list.labels)
    }

    async fn list_pages(
        &self,
        name: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Runner>, GithubError> {
        let mut runners = Vec::new();
        let mut page = 1u32;
        loop {
            let mut path = format!("{}?per_page={PER_PAGE}&page={page}", self.runners_path());
            if let Some(name) = name {
                path.push_str("&name=");
                path.push_str(
                    &url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>(),
                );
            }
            let (body, link) = self.get_conditional(&path, deadline).await?;
            let parsed: RunnerPage = decode(&Method::GET, &path, &body)?;
            let got = parsed.runners.len();
            runners.extend(parsed.runners);
            let next = link.as_deref().and_then(next_page);
            match next {
                Some(n) if n > page && got > 0 => page = n,
                _ => break,
            }
            if runners.len() as u64 >= parsed.total_count {
                break;
            }
        }
        Ok(runners)
    }

    /// GET with `If-None-Match`; returns the body and `Link` header, from cache on a 304.
    async fn get_conditional(
        &self,
        path: &str,
        deadline: Instant,
    ) -> Result<(String, Option<String>), GithubError> {
        let cached = self.lock_pages().get(path).cloned();
        let condition = cached.as_ref().map(|c| c.etag.clone());
        let reply = self
            .call(Method::GET, path, None, condition, deadline)
            .await?;
        let link_text = |v: &HeaderValue| v.to_str().ok().map(str::to_owned);
        if reply.status == StatusCode::NOT_MODIFIED {
            if let Some(c) = cached {
                return Ok((c.body, c.link.as_ref().and_then(link_text)));
            }
        }
        let link = reply.headers.get(LINK).cloned();
        if let Some(etag) = reply.headers.get(ETAG) {
            self.lock_pages().insert(
                path.to_owned(),
                CachedPage {
                    etag: etag.clone(),
                    link: link.clone(),
                    body: reply.body.clone(),
                },
            );
        }
        Ok((reply.body, link.as_ref().and_then(link_text)))
    }

    fn lock_pages(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedPage>> {
        // A poisoned cache is still a valid cache: every entry is written whole.
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> Result<T, GithubError> {
        let reply = self
            .call(method.clone(), path, body, None, deadline)
            .await?;
        decode(&method, path, &reply.body)
    }

    /// Sends one request, retrying as the policy says, until success, a final error or the
    /// deadline.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        if_none_match: Option<HeaderValue>,
        deadline: Instant,
    ) -> Result<Reply, GithubError> {
        let mut backoff = self.policy.backoff();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let reply = match self
                .attempt(&method, path, body, if_none_match.clone())
                .await
            {
                Ok(reply) => reply,
                Err(Failure::Transport(reason)) => {
                    let delay = backoff.next().filter(|d| Instant::now() + *d < deadline);
                    let Some(delay) = delay else {
                        return Err(GithubError::Transport {
                            method,
                            path: path.to_owned(),
                            attempts,
                            reason,
                        });
                    };
                    warn!(%method, path, attempts, ?delay, %reason, "GitHub unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(Failure::Fatal(reason)) => {
                    return Err(GithubError::Decode {
                        method,
                        path: path.to_owned(),
                        reason,
                    })
                }
            };
            debug!(%method, path, status = reply.status.as_u16(), attempts, "GitHub answered");
            // Counted as GitHub charges them: neither reading the rate limit nor a 304 to a
            // conditional request costs any.
            if path != RATE_LIMIT_PATH && reply.status != StatusCode::NOT_MODIFIED {
                self.calls.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(rate) = stated_rate_limit(&reply.headers) {
                *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(rate);
            }
            if reply.status.is_success() || reply.status == StatusCode::NOT_MODIFIED {
                return Ok(reply);
            }
            let message = github_message(&reply.body);
            let delay = if let Some(wait) = rate_limit_wait(
                reply.status,
                &reply.headers,
                &message,
                epoch_secs(),
                &self.policy,
            ) {
                if Instant::now() + wait > deadline {
                    return Err(GithubError::RateLimited {
                        method,
                        path: path.to_owned(),
                        wait,
                    });
                }
                warn!(%method, path, ?wait, "GitHub rate limit; waiting it out");
                wait
            } else if reply.status.is_server_error() {
                match backoff.next().filter(|d| Instant::now() + *d < deadline) {
                    Some(delay) => {
                        warn!(%method, path, status = reply.status.as_u16(), attempts, ?delay, "GitHub server error; retrying");
                        delay
                    }
                    None => {
                        return Err(GithubError::Server {
                            method,
                            path: path.to_owned(),
                            status: reply.status,
                            attempts,
                            message,
                        })
                    }
                }
            } else {
                return Err(client_error(method, path, reply.status, message));
            };
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&serde_json::Value>,
        if_none_match: Option<HeaderValue>,
    ) -> Result<Reply, Failure> {
        let mut builder = http::Request::builder().method(method.clone()).uri(path);
        if let Some(etag) = if_none_match {
            builder = builder.header(IF_NONE_MATCH, etag);
        }
        let request = self
            .crab
            .build_request(builder, body)
            .map_err(|e| Failure::Fatal(e.to_string()))?;
        match self.crab.execute(request).await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                let body = self
                    .crab
                    .body_to_string(response)
                    .await
                    .map_err(|e| Failure::Transport(e.to_string()))?;
                Ok(Reply {
                    status,
                    headers,
                    body,
                })
            }
            // octocrab reports a failed installation-token request as a GitHub error: treat
            // it as the answer it was.
            Err(octocrab::Error::GitHub { source, .. }) => Ok(Reply {
                status: source.status_code,
                headers: source.headers.clone().unwrap_or_default(),
                body: serde_json::json!({ "message": source.message }).to_string(),
            }),
            Err(e @ (octocrab::Error::Hyper { .. } | octocrab::Error::Service { .. })) => {
                Err(Failure::Transport(e.to_string()))
            }
            Err(e) => Err(Failure::Fatal(e.to_string())),
        }
    }
}

enum Failure {
    Transport(String),
    Fatal(String),
}

fn client_error(method: Method, path: &str, status: StatusCode, message: String) -> GithubError {
    let path = path.to_owned();
    match status {
        StatusCode::UNAUTHORIZED => GithubError::Unauthorized {
            method,
            path,
            status,
            message,
        },
        StatusCode::FORBIDDEN => GithubError::Forbidden {
            method,
            path,
            message,
        },
        StatusCode::NOT_FOUND => GithubError::NotFound { path, message },
        _ => GithubError::Rejected {
            method,
            path,
            status,
            message,
        },
    }
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, body: &str) -> Result<T, GithubError> {
    serde_json::from_str(body).map_err(|e| GithubError::Decode {
        method: method.clone(),
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// GitHub's error text (`{"message": ...}`), or the start of a body that is not JSON.
fn github_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `page` of the `rel="next"` link in a `Link` header.
fn next_page(link: &str) -> Option<u32> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let url = url::Url::parse(target).ok()?;
        let page = url.query_pairs().find(|(k, _)| k == "page")?.1;
        page.parse().ok()
    })
}

#[async_trait::async_trait]
impl crate::ports::RunnerRegistry for GithubClient {
    async fn registration_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError> {
        GithubClient::registration_token(self, deadline).await
    }

    async fn remove_token(&self, deadline: Instant) -> Result<RunnerToken, GithubError> {
        GithubClient::remove_token(self, deadline).await
    }

    async fn jit_config(
        &self,
        request: &JitRequest,
        deadline: Instant,
    ) -> Result<JitConfig, GithubError> {
        self.generate_jit_config(request, deadline).await
    }

    async fn runners(
        &self,
        label: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Runner>, GithubError> {
        self.list_runners(label, deadline).await
    }

    async fn runner_named(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Runner>, GithubError> {
        self.find_runner(name, deadline).await
    }

    async fn delete_runner(&self, runner_id: u64, deadline: Instant) -> Result<(), GithubError> {
        GithubClient::delete_runner(self, runner_id, deadline).await
    }

    async fn remove_labels(&self, runner_id: u64, deadline: Instant) -> Result<(), GithubError> {
        self.remove_custom_labels(runner_id, deadline)
            .await
            .map(|_| ())
    }

    fn api_calls(&self) -> u64 {
        GithubClient::api_calls(self)
    }

    fn rate_limit_seen(&self) -> Option<RateLimit> {
        GithubClient::rate_limit_seen(self)
    }

    async fn rate_limit(&self, deadline: Instant) -> Result<Option<RateLimit>, GithubError> {
        GithubClient::rate_limit(self, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_page_in_a_link_header() {
        let link = r#"<https://api.github.com/orgs/a/actions/runners?per_page=100&page=3>; rel="next", <https://api.github.com/orgs/a/actions/runners?per_page=100&page=3>; rel="last""#;
        assert_eq!(next_page(link), Some(3));
        let last_only = r#"<https://x/y?page=1>; rel="prev", <https://x/y?page=1>; rel="first""#;
        assert_eq!(next_page(last_only), None);
        assert_eq!(next_page("garbage"), None);
    }

    #[test]
    fn github_message_prefers_the_json_message() {
        assert_eq!(
            github_message(r#"{"message":"Bad credentials"}"#),
            "Bad credentials"
        );
        assert_eq!(github_message("<html>502</html>"), "<html>502</html>");
    }
}
