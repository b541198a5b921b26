//! What a job's news does to the fleet: a pure function of the news and the groups the
//! deployment runs, with no I/O.
//!
//! - A job is routed to the first group, in the configured order (`WARMFLEET_GROUPS`), whose
//!   runners carry every label of the job, compared case-insensitively as GitHub does. A job
//!   that several groups could serve therefore always goes to the same one, and an operator
//!   orders the groups to choose which.
//! - A queued job adds one instance to its group (the warm pool resumes one first).
//! - A started job records how long it waited.
//! - Anything else (a completed job, a job waiting for an approval, a job no group can run)
//!   changes nothing: scale-in stays with the alarms, the terminate hook and the drain.

use super::payload::JobNews;
use warmfleet_core::naming;

/// A group and the labels its runners carry (lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub labels: Vec<String>,
}

impl Group {
    /// A group whose runners carry the fleet label, the deployment's, the group's name and
    /// `extra`, as the registration Lambda registers them.
    pub fn new(deployment: &naming::Deployment, name: &str, extra: &[String]) -> Group {
        Group {
            name: name.to_owned(),
            labels: naming::runner_labels(deployment, name, "", extra)
                .into_iter()
                .map(|l| l.to_lowercase())
                .collect(),
        }
    }

    /// GitHub's rule: a runner can take a job when it carries every label the job asks for.
    pub fn serves(&self, job_labels: &[String]) -> bool {
        !job_labels.is_empty()
            && job_labels
                .iter()
                .all(|l| self.labels.contains(&l.to_lowercase()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// One more instance in this group.
    AddOne { group: String },
    /// A job of this group waited this long for a runner.
    RecordQueueTime { group: String, seconds: f64 },
}

/// The group a job goes to, if any.
pub fn route<'a>(job_labels: &[String], groups: &'a [Group]) -> Option<&'a Group> {
    groups.iter().find(|g| g.serves(job_labels))
}

pub fn decide(news: &JobNews, groups: &[Group]) -> Option<Action> {
    match news {
        JobNews::Queued { labels, .. } => route(labels, groups).map(|g| Action::AddOne {
            group: g.name.clone(),
        }),
        JobNews::Started {
            labels,
            queued_seconds,
            ..
        } => route(labels, groups).map(|g| Action::RecordQueueTime {
            group: g.name.clone(),
            seconds: *queued_seconds,
        }),
        JobNews::Completed { .. } | JobNews::Other { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| (*s).to_owned()).collect()
    }

    fn none() -> naming::Deployment {
        naming::Deployment::default()
    }

    fn groups() -> Vec<Group> {
        vec![
            Group::new(&none(), "small", &labels(&["linux", "x64"])),
            Group::new(&none(), "large", &labels(&["linux", "x64", "large"])),
        ]
    }

    fn queued(l: &[&str]) -> JobNews {
        JobNews::Queued {
            job_id: 1,
            labels: labels(l),
        }
    }

    #[test]
    fn a_group_serves_a_job_whose_every_label_its_runners_carry_in_any_case() {
        let g = Group::new(&none(), "ci-asg", &labels(&["Linux"]));
        assert_eq!(g.labels, ["warmfleet", "ci-asg", "linux"]);
        let prod = naming::Deployment::parse("prod").unwrap();
        let p = Group::new(&prod, "ci-asg", &labels(&["Linux"]));
        assert!(p.serves(&labels(&["warmfleet-prod", "ci-asg"])));
        assert!(!g.serves(&labels(&["warmfleet-prod", "ci-asg"])));
        assert!(g.serves(&labels(&["warmfleet"])));
        assert!(g.serves(&labels(&["WARMFLEET", "LINUX", "Ci-Asg"])));
        assert!(
            !g.serves(&labels(&["warmfleet", "gpu"])),
            "one label missing"
        );
        assert!(!g.serves(&labels(&["self-hosted"])));
        assert!(!g.serves(&[]), "a job without labels is no one's");
    }

    #[test]
    fn a_queued_job_adds_one_instance_to_the_first_group_that_serves_it() {
        let g = groups();
        assert_eq!(
            decide(&queued(&["warmfleet", "linux"]), &g),
            Some(Action::AddOne {
                group: "small".into()
            }),
            "both serve it: the first in the configured order"
        );
        assert_eq!(
            decide(&queued(&["linux", "large"]), &g),
            Some(Action::AddOne {
                group: "large".into()
            })
        );
        assert_eq!(
            decide(
                &queued(&["large"]),
                &g.iter().rev().cloned().collect::<Vec<_>>()
            ),
            Some(Action::AddOne {
                group: "large".into()
            })
        );
        assert_eq!(decide(&queued(&["ubuntu-latest"]), &g), None);
        assert_eq!(decide(&queued(&["warmfleet"]), &[]), None);
    }

    #[test]
    fn a_started_job_records_its_wait_and_nothing_else_acts() {
        let g = groups();
        let started = JobNews::Started {
            job_id: 1,
            labels: labels(&["large"]),
            queued_seconds: 4.5,
        };
        assert_eq!(
            decide(&started, &g),
            Some(Action::RecordQueueTime {
                group: "large".into(),
                seconds: 4.5
            })
        );
        let done = JobNews::Completed {
            job_id: 1,
            labels: labels(&["large"]),
        };
        assert_eq!(decide(&done, &g), None);
        let waiting = JobNews::Other {
            action: "waiting".into(),
        };
        assert_eq!(decide(&waiting, &g), None);
    }
}
