//! What an instance learns about itself from IMDSv2: its id, region, Auto Scaling group and
//! target lifecycle state. aws-config's IMDS client does the IMDSv2 work (session tokens,
//! a fresh token on 401, retries); `AWS_EC2_METADATA_SERVICE_ENDPOINT` points it elsewhere,
//! as the testbed does. After a resume, build a new `Imds`: the old session token may have
//! expired while the instance slept.

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use std::time::Duration;

/// The Auto Scaling group's name among an instance's tags (IMDS serves it when the launch
/// template turns instance metadata tags on).
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";

#[derive(Debug, thiserror::Error)]
#[error("IMDS {path}: {message}")]
pub struct ImdsError {
    pub path: String,
    pub message: String,
}

/// Who this instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    pub group: String,
}

/// Where Auto Scaling is taking the instance (`autoscaling/target-lifecycle-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// `InService`.
    InService,
    /// `Warmed:Hibernated`, `Warmed:Stopped`, `Warmed:Running`.
    WarmPool,
    /// `Terminated`, `Warmed:Terminated`.
    Terminated,
}

impl Target {
    /// Reads IMDS's value; `None` for one warmfleet does not know.
    pub fn parse(value: &str) -> Option<Target> {
        match value.trim() {
            "InService" => Some(Target::InService),
            "Terminated" | "Warmed:Terminated" => Some(Target::Terminated),
            v if v.starts_with("Warmed:") => Some(Target::WarmPool),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Imds {
    client: aws_config::imds::Client,
}

impl Imds {
    /// A client with a fresh session; every call is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Imds {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let provider =
            aws_config::provider_config::ProviderConfig::default().with_http_client(http);
        let client = aws_config::imds::Client::builder()
            .configure(&provider)
            .operation_timeout(timeout)
            .build();
        Imds { client }
    }

    async fn get(&self, path: &str) -> Result<String, ImdsError> {
        self.client
            .get(format!("/latest/meta-data/{path}"))
            .await
            .map(|v| v.as_ref().trim().to_owned())
            .map_err(|e| ImdsError {
                path: path.to_owned(),
                message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            })
    }

    pub async fn identity(&self) -> Result<Identity, ImdsError> {
        Ok(Identity {
            instance_id: self.get("instance-id").await?,
            region: self.get("placement/region").await?,
            group: self.get(&format!("tags/instance/{GROUP_TAG}")).await?,
        })
    }

    pub async fn target(&self) -> Result<Target, ImdsError> {
        let path = "autoscaling/target-lifecycle-state";
        let value = self.get(path).await?;
        Target::parse(&value).ok_or_else(|| ImdsError {
            path: path.to_owned(),
            message: format!("unknown target lifecycle state {value:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_target_lifecycle_states() {
        assert_eq!(Target::parse("InService\n"), Some(Target::InService));
        assert_eq!(Target::parse("Warmed:Hibernated"), Some(Target::WarmPool));
        assert_eq!(Target::parse("Warmed:Stopped"), Some(Target::WarmPool));
        assert_eq!(Target::parse("Warmed:Terminated"), Some(Target::Terminated));
        assert_eq!(Target::parse("Terminated"), Some(Target::Terminated));
        assert_eq!(Target::parse("Detached"), None);
    }
}
