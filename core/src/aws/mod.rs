//! The aws-sdk side of the ports: one place where warmfleet's domain meets AWS.
//!
//! Clients are configured the standard way (region, credentials and endpoints from the
//! environment, so `AWS_ENDPOINT_URL_<SERVICE>` points them at the testbed), with the HTTP
//! client set explicitly: rustls on ring, no default features in the aws-sdk crates.

mod secrets;

pub use secrets::SecretsManager;

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The shared AWS configuration every client is built from.
pub async fn load_config() -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}
