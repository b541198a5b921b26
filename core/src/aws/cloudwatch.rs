//! `Metrics` on CloudWatch: one `PutMetricData` per group, namespace and dimension from
//! `naming`.

use super::sdk_error;
use crate::naming::{METRIC_DIMENSION_ASG, METRIC_NAMESPACE};
use crate::ports::{Metrics, PortError};
use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

pub struct CloudWatch {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatch {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        CloudWatch {
            client: aws_sdk_cloudwatch::Client::new(config),
        }
    }
}

/// A datum of `metric` for one group: the dimension every warmfleet metric has.
fn datum(group: &str, metric: &str) -> aws_sdk_cloudwatch::types::builders::MetricDatumBuilder {
    MetricDatum::builder().metric_name(metric).dimensions(
        Dimension::builder()
            .name(METRIC_DIMENSION_ASG)
            .value(group)
            .build(),
    )
}

impl CloudWatch {
    /// One PutMetricData; no timestamp: CloudWatch stamps the data when it arrives.
    async fn put(&self, group: &str, data: Vec<MetricDatum>) -> Result<(), PortError> {
        self.client
            .put_metric_data()
            .namespace(METRIC_NAMESPACE)
            .set_metric_data(Some(data))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("CloudWatch", "PutMetricData", group.to_owned(), &e))
    }
}

#[async_trait]
impl Metrics for CloudWatch {
    async fn publish(&self, group: &str, values: &[(&str, f64)]) -> Result<(), PortError> {
        // High resolution: the scale-in alarm may evaluate 10-second periods, acting within
        // seconds of the count instead of a minute later (infra/scaling.tf); standard data
        // would be filed under its minute's start, a period such an alarm has already
        // evaluated.
        let data = values
            .iter()
            .map(|(name, value)| {
                datum(group, name)
                    .value(*value)
                    .unit(StandardUnit::Count)
                    .storage_resolution(1)
                    .build()
            })
            .collect();
        self.put(group, data).await
    }

    async fn publish_seconds(
        &self,
        group: &str,
        metric: &str,
        seconds: &[f64],
    ) -> Result<(), PortError> {
        // Every value in one datum (up to 150 a datum), as CloudWatch takes them.
        let data = seconds
            .chunks(150)
            .map(|values| {
                datum(group, metric)
                    .set_values(Some(values.to_vec()))
                    .unit(StandardUnit::Seconds)
                    .build()
            })
            .collect();
        self.put(group, data).await
    }
}
