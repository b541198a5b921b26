//! Which runners warmfleet manages: an organisation's, a repository's or an enterprise's, on
//! github.com or a GitHub Enterprise Server.

use super::GithubError;
use url::Url;

/// Where runners are registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Org(String),
    Repo { owner: String, name: String },
    Enterprise(String),
}

impl Scope {
    /// The REST path under which this scope's runner endpoints live.
    pub fn api_prefix(&self) -> String {
        match self {
            Scope::Org(org) => format!("/orgs/{org}"),
            Scope::Repo { owner, name } => format!("/repos/{owner}/{name}"),
            Scope::Enterprise(slug) => format!("/enterprises/{slug}"),
        }
    }
}

/// The runners' home: the URL given to the runner's `config.sh --url`, the REST API base URL
/// and the scope both name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubTarget {
    pub scope: Scope,
    /// What `config.sh --url` takes, e.g. `https://github.com/acme`.
    pub html_url: Url,
    /// The REST API root: `https://api.github.com`, or `https://HOST/api/v3` on GHES.
    pub api_url: Url,
}

impl GithubTarget {
    /// Reads a runner URL: `https://HOST/ORG`, `https://HOST/OWNER/REPO` or
    /// `https://HOST/enterprises/SLUG`. The API URL is derived from the host (github.com
    /// gives api.github.com, any other host `/api/v3` on it) unless `api_url` is given.
    pub fn parse(url: &str, api_url: Option<&str>) -> Result<Self, GithubError> {
        let bad = |reason: &str| GithubError::Config(format!("GitHub URL {url:?}: {reason}"));
        let html_url = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(html_url.scheme(), "https" | "http") {
            return Err(bad(
                "the scheme must be https (or http for a local test server)",
            ));
        }
        let host = html_url.host_str().ok_or_else(|| bad("it has no host"))?;
        let segments: Vec<&str> = html_url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let scope = match segments.as_slice() {
            ["enterprises", slug] => Scope::Enterprise((*slug).to_owned()),
            [org] => Scope::Org((*org).to_owned()),
            [owner, name] => Scope::Repo {
                owner: (*owner).to_owned(),
                name: (*name).to_owned(),
            },
            _ => {
                return Err(bad(
                    "expected .../ORG, .../OWNER/REPO or .../enterprises/SLUG after the host",
                ))
            }
        };
        let api_url = match api_url {
            Some(api) => Url::parse(api)
                .map_err(|e| GithubError::Config(format!("GitHub API URL {api:?}: {e}")))?,
            None if host == "github.com" => Url::parse("https://api.github.com")
                .map_err(|e| GithubError::Config(format!("GitHub API URL for github.com: {e}")))?,
            None => {
                let mut api = html_url.clone();
                api.set_path("/api/v3");
                api.set_query(None);
                api
            }
        };
        Ok(GithubTarget {
            scope,
            html_url,
            api_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_com_forms() {
        let org = GithubTarget::parse("https://github.com/acme", None).unwrap();
        assert_eq!(org.scope, Scope::Org("acme".into()));
        assert_eq!(org.api_url.as_str(), "https://api.github.com/");
        assert_eq!(org.scope.api_prefix(), "/orgs/acme");

        let repo = GithubTarget::parse("https://github.com/acme/app/", None).unwrap();
        assert_eq!(repo.scope.api_prefix(), "/repos/acme/app");

        let ent = GithubTarget::parse("https://github.com/enterprises/big", None).unwrap();
        assert_eq!(ent.scope, Scope::Enterprise("big".into()));
        assert_eq!(ent.scope.api_prefix(), "/enterprises/big");
    }

    #[test]
    fn ghes_derives_api_v3_and_accepts_an_explicit_api_url() {
        let t = GithubTarget::parse("https://ghe.example.com/acme", None).unwrap();
        assert_eq!(t.api_url.as_str(), "https://ghe.example.com/api/v3");
        let t =
            GithubTarget::parse("https://ghe.example.com/acme", Some("https://api.x/v3")).unwrap();
        assert_eq!(t.api_url.as_str(), "https://api.x/v3");
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (url, want) in [
            ("github.com/acme", "relative URL"),
            ("ftp://github.com/acme", "scheme"),
            ("https://github.com/", "expected"),
            ("https://github.com/a/b/c", "expected"),
        ] {
            let err = GithubTarget::parse(url, None).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
            assert!(err.contains(url), "{url}: {err}");
        }
    }
}
