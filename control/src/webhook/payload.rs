//! The `workflow_job` delivery, as far as warmfleet reads it. The fixtures in
//! `tests/fixtures/webhooks/` follow GitHub's published schema (`@octokit/webhooks-schemas`,
//! definition `workflow-job`). Fields warmfleet does not read are ignored, so GitHub may add
//! to the payload freely.

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJobEvent {
    pub action: String,
    pub workflow_job: WorkflowJob,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJob {
    pub id: u64,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// Set on every action; the moment a runner took the job only from `in_progress` on.
    pub started_at: Option<DateTime<Utc>>,
    /// `null` while the job is queued.
    pub runner_name: Option<String>,
}

/// What a delivery says about a job, independent of where the news comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum JobNews {
    /// The job waits for a runner.
    Queued {
        job_id: u64,
        labels: Vec<String>,
    },
    /// A runner took the job after it waited `queued_seconds`.
    Started {
        job_id: u64,
        labels: Vec<String>,
        queued_seconds: f64,
    },
    Completed {
        job_id: u64,
        labels: Vec<String>,
    },
    /// Nothing for the fleet to do (`waiting`: the job waits for an approval, not a runner).
    Other {
        action: String,
    },
}

impl WorkflowJobEvent {
    pub fn news(self) -> JobNews {
        let job = self.workflow_job;
        match self.action.as_str() {
            "queued" => JobNews::Queued {
                job_id: job.id,
                labels: job.labels,
            },
            "in_progress" => {
                let started = job.started_at.unwrap_or(job.created_at);
                let waited = (started - job.created_at).num_milliseconds().max(0);
                JobNews::Started {
                    job_id: job.id,
                    labels: job.labels,
                    queued_seconds: waited as f64 / 1000.0,
                }
            }
            "completed" => JobNews::Completed {
                job_id: job.id,
                labels: job.labels,
            },
            _ => JobNews::Other {
                action: self.action,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> JobNews {
        serde_json::from_str::<WorkflowJobEvent>(text)
            .unwrap()
            .news()
    }

    #[test]
    fn reads_each_action_of_githubs_payloads() {
        assert_eq!(
            read(include_str!("../../tests/fixtures/webhooks/queued.json")),
            JobNews::Queued {
                job_id: 31000000001,
                labels: vec!["warmfleet".into(), "Linux".into()]
            }
        );
        assert_eq!(
            read(include_str!(
                "../../tests/fixtures/webhooks/in_progress.json"
            )),
            JobNews::Started {
                job_id: 31000000001,
                labels: vec!["warmfleet".into(), "Linux".into()],
                queued_seconds: 7.0
            }
        );
        assert!(matches!(
            read(include_str!("../../tests/fixtures/webhooks/completed.json")),
            JobNews::Completed {
                job_id: 31000000001,
                ..
            }
        ));
        assert_eq!(
            read(include_str!("../../tests/fixtures/webhooks/waiting.json")),
            JobNews::Other {
                action: "waiting".into()
            }
        );
    }
}
