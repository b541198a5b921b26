//! The group's custom termination policy with the runner table: which instances a scale-in
//! takes. Auto Scaling invokes the function with the capacity it must take out of each
//! Availability Zone and the instances it proposes, and takes the instances the answer
//! names (none, or fewer: it asks again a little later, the desired capacity staying below
//! the group's).
//!
//! With agents that record their jobs in the runner table instead of protecting their
//! instances, this is what keeps a scale-in off busy runners. What each cause takes:
//!
//! - a scale-in (`SCALE_IN`), and rebalancing the zones (`REBALANCE`: Auto Scaling asks
//!   whether to start one at all), and any cause AWS may add: only instances the table
//!   does not hold busy (one with no record has taken no job since its agent started);
//! - an instance refresh (`INSTANCE_REFRESH`), which must end (it fails after an hour of
//!   answers short): idle instances first, then busy ones, whose drain lets the job finish;
//! - the maximum instance lifetime (`MAX_INSTANCE_LIFETIME`): what Auto Scaling proposed
//!   (it keeps asking for the instance past its lifetime; the drain lets its job finish).
//!
//! Each zone's capacity takes candidates of that zone (and market) in the order proposed;
//! should those fall short, idle candidates of other zones fill the rest (AWS allows any
//! instance of the group in an answer, and launches to even the zones out). Scale-in
//! protection still applies: Auto Scaling proposes no protected instance.

use crate::event::EventError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::time::Instant;
use tracing::{info, warn};
use warmfleet_core::ports::Occupancy;

/// Auto Scaling's question, as its documentation gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminationRequest {
    pub auto_scaling_group_name: String,
    pub capacity_to_terminate: Vec<CapacityToTerminate>,
    pub instances: Vec<Candidate>,
    pub cause: String,
    /// More than 30,000 instances could be taken; the request names 30,000 of them.
    #[serde(default)]
    pub has_more_instances: bool,
}

impl TerminationRequest {
    pub fn parse(payload: Value) -> Result<Self, EventError> {
        serde_json::from_value(payload)
            .map_err(|e| EventError(format!("a termination policy request: {e}")))
    }

    /// How many instances it asks for, over every zone.
    fn wanted(&self) -> usize {
        self.capacity_to_terminate
            .iter()
            .map(|c| c.capacity as usize)
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapacityToTerminate {
    pub availability_zone: String,
    pub capacity: u32,
    #[serde(default)]
    pub instance_market_option: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Candidate {
    pub availability_zone: String,
    pub instance_id: String,
    #[serde(default)]
    pub instance_market_option: Option<String>,
}

/// The answer: the instances to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TerminationAnswer {
    #[serde(rename = "InstanceIDs")]
    pub instance_ids: Vec<String>,
}

/// Which candidates a cause may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Idle runners only.
    Idle,
    /// Idle runners first, then busy ones.
    IdleFirst,
    /// Auto Scaling's own proposal.
    Proposed,
}

fn takes(cause: &str) -> Takes {
    match cause {
        "INSTANCE_REFRESH" => Takes::IdleFirst,
        "MAX_INSTANCE_LIFETIME" => Takes::Proposed,
        _ => Takes::Idle,
    }
}

/// Where a candidate may fill: the zone and market of a capacity to take.
fn fits(c: &Candidate, capacity: &CapacityToTerminate) -> bool {
    c.availability_zone == capacity.availability_zone
        && (capacity.instance_market_option.is_none()
            || c.instance_market_option == capacity.instance_market_option)
}

/// The choice among the first `read` candidates, given what the runner table holds of
/// them (`true`: busy; missing: no record, idle), for what `takes` allows.
fn choose(
    request: &TerminationRequest,
    read: usize,
    busy: &BTreeMap<String, bool>,
    takes: Takes,
) -> Vec<String> {
    let candidates = &request.instances[..read.min(request.instances.len())];
    let is_busy = |c: &Candidate| {
        takes != Takes::Proposed && busy.get(&c.instance_id).copied().unwrap_or(false)
    };
    let mut chosen: Vec<String> = Vec::new();
    // Idle ones of each zone's capacity, then (a refresh) its busy ones.
    let fill = |chosen: &mut Vec<String>, wanted: usize, pick: &dyn Fn(&Candidate) -> bool| {
        let more: Vec<String> = candidates
            .iter()
            .filter(|c| pick(c) && !chosen.contains(&c.instance_id))
            .take(wanted)
            .map(|c| c.instance_id.clone())
            .collect();
        chosen.extend(more);
    };
    for capacity in &request.capacity_to_terminate {
        let before = chosen.len();
        let wanted = capacity.capacity as usize;
        fill(&mut chosen, wanted, &|c| fits(c, capacity) && !is_busy(c));
        if takes == Takes::IdleFirst {
            let left = wanted - (chosen.len() - before);
            fill(&mut chosen, left, &|c| fits(c, capacity));
        }
    }
    // Short in some zone: idle runners of any zone.
    let left = request.wanted().saturating_sub(chosen.len());
    fill(&mut chosen, left, &|c| !is_busy(c));
    chosen
}

/// How long the function takes at most to answer: Auto Scaling allows a custom
/// termination policy 2 s.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_millis(1500);

/// Candidates read from the runner table at a time: a `BatchGetItem`'s worth.
const CHUNK: usize = 100;

/// The policy's function: reads the candidates' records in the order proposed, a chunk at
/// a time, until enough idle ones are found or its time is up (Auto Scaling gives it 2 s),
/// then answers with what it chose.
pub struct ScaleIn<'a> {
    pub occupancy: &'a dyn Occupancy,
}

impl ScaleIn<'_> {
    pub async fn answer(&self, request: &TerminationRequest, until: Instant) -> TerminationAnswer {
        let takes = takes(&request.cause);
        let wanted = request.wanted();
        let mut busy = BTreeMap::new();
        let mut read = 0;
        if takes != Takes::Proposed {
            for chunk in request.instances.chunks(CHUNK) {
                let ids: Vec<String> = chunk.iter().map(|c| c.instance_id.clone()).collect();
                match tokio::time::timeout_at(until, self.occupancy.of(&ids)).await {
                    Ok(Ok(records)) => busy.extend(records),
                    Ok(Err(e)) if read == 0 => return self.unread(request, &e.to_string()),
                    Err(_) if read == 0 => return self.unread(request, "no answer in time"),
                    // Part read: what was chosen so far goes; Auto Scaling asks again.
                    Ok(Err(e)) => {
                        warn!(error = %e, read, "the runner table: answering with part read");
                        break;
                    }
                    Err(_) => {
                        warn!(read, "the runner table: time up, answering with part read");
                        break;
                    }
                }
                read += chunk.len();
                if choose(request, read, &busy, Takes::Idle).len() >= wanted {
                    break;
                }
            }
        } else {
            read = request.instances.len();
        }
        let chosen = choose(request, read, &busy, takes);
        info!(
            group = %request.auto_scaling_group_name,
            cause = %request.cause,
            wanted,
            proposed = request.instances.len(),
            read,
            busy = busy.values().filter(|b| **b).count(),
            chosen = ?chosen,
            "termination policy"
        );
        TerminationAnswer {
            instance_ids: chosen,
        }
    }

    /// The runner table could not be read at all: only a refresh takes what Auto Scaling
    /// proposed (the drain lets a running job finish; a refresh answered short for an
    /// hour fails); a scale-in takes nothing, and Auto Scaling asks again shortly.
    fn unread(&self, request: &TerminationRequest, why: &str) -> TerminationAnswer {
        warn!(
            group = %request.auto_scaling_group_name,
            cause = %request.cause,
            error = why,
            "the runner table could not be read"
        );
        let all_busy: BTreeMap<String, bool> = request
            .instances
            .iter()
            .map(|c| (c.instance_id.clone(), true))
            .collect();
        TerminationAnswer {
            instance_ids: choose(
                request,
                request.instances.len(),
                &all_busy,
                takes(&request.cause),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::Runners as Table;
    use serde_json::json;
    use std::time::Duration;

    /// A request as Auto Scaling sends it (the documentation's shape).
    fn request(
        cause: &str,
        capacity: &[(&str, u32)],
        instances: &[(&str, &str)],
    ) -> TerminationRequest {
        serde_json::from_value(json!({
            "AutoScalingGroupARN": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:d4738357:autoScalingGroupName/runners",
            "AutoScalingGroupName": "runners",
            "CapacityToTerminate": capacity.iter().map(|(az, n)| json!({
                "AvailabilityZone": az, "Capacity": n, "InstanceMarketOption": "on-demand"
            })).collect::<Vec<_>>(),
            "Instances": instances.iter().map(|(az, id)| json!({
                "AvailabilityZone": az, "InstanceId": id, "InstanceType": "t3.medium",
                "InstanceMarketOption": "on-demand"
            })).collect::<Vec<_>>(),
            "Cause": cause,
        }))
        .unwrap()
    }

    fn table(busy: &[(&str, bool)]) -> Table {
        Table {
            busy: busy.iter().map(|(i, b)| ((*i).to_owned(), *b)).collect(),
            ..Table::default()
        }
    }

    async fn answer(t: &Table, r: &TerminationRequest) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(2);
        ScaleIn { occupancy: t }.answer(r, until).await.instance_ids
    }

    #[tokio::test]
    async fn a_scale_in_takes_idle_runners_of_each_zone_in_the_order_proposed_never_a_busy_one() {
        let t = table(&[("i-1", true), ("i-2", false), ("i-4", true), ("i-5", true)]);
        // i-3 has no record: its runner has taken no job since its agent started.
        let r = request(
            "SCALE_IN",
            &[("us-east-1a", 2), ("us-east-1b", 2)],
            &[
                ("us-east-1a", "i-1"),
                ("us-east-1a", "i-2"),
                ("us-east-1a", "i-3"),
                ("us-east-1b", "i-4"),
                ("us-east-1b", "i-5"),
            ],
        );
        assert_eq!(
            answer(&t, &r).await,
            ["i-2", "i-3"],
            "zone b has only busy runners"
        );
        let all_busy = table(&[("i-1", true)]);
        let r = request("SCALE_IN", &[("us-east-1a", 1)], &[("us-east-1a", "i-1")]);
        assert!(
            answer(&all_busy, &r).await.is_empty(),
            "nothing: Auto Scaling asks again later"
        );
    }

    #[tokio::test]
    async fn a_zone_short_of_idle_runners_is_made_up_from_another_zone() {
        let t = table(&[("i-1", true), ("i-4", false)]);
        let r = request(
            "SCALE_IN",
            &[("us-east-1a", 1)],
            &[("us-east-1a", "i-1"), ("us-east-1b", "i-4")],
        );
        assert_eq!(answer(&t, &r).await, ["i-4"]);
    }

    #[tokio::test]
    async fn a_refresh_takes_busy_runners_after_idle_ones_a_lifetime_what_was_proposed() {
        let t = table(&[("i-1", true), ("i-2", true), ("i-3", false)]);
        let proposed = [
            ("us-east-1a", "i-1"),
            ("us-east-1a", "i-2"),
            ("us-east-1a", "i-3"),
        ];
        let two = |cause| request(cause, &[("us-east-1a", 2)], &proposed);
        assert_eq!(answer(&t, &two("INSTANCE_REFRESH")).await, ["i-3", "i-1"]);
        assert_eq!(
            answer(&t, &two("MAX_INSTANCE_LIFETIME")).await,
            ["i-1", "i-2"]
        );
        // A rebalance only asks whether to start; a cause AWS adds later is not a reason
        // to take a busy runner.
        for cause in ["REBALANCE", "SOMETHING_NEW"] {
            assert_eq!(answer(&t, &two(cause)).await, ["i-3"], "{cause}");
        }
    }

    #[tokio::test]
    async fn a_refresh_reads_on_past_busy_runners_for_idle_ones() {
        let ids: Vec<String> = (0..300).map(|n| format!("i-{n:04}")).collect();
        let t = Table {
            busy: ids.iter().take(150).map(|i| (i.clone(), true)).collect(),
            ..Table::default()
        };
        let proposed: Vec<(&str, &str)> = ids.iter().map(|i| ("us-east-1a", i.as_str())).collect();
        let r = request("INSTANCE_REFRESH", &[("us-east-1a", 2)], &proposed);
        assert_eq!(answer(&t, &r).await, ["i-0150", "i-0151"]);
    }

    #[tokio::test]
    async fn a_table_that_cannot_be_read_holds_a_scale_in_but_not_a_refresh() {
        let t = Table {
            fail: true,
            ..Table::default()
        };
        let proposed = [("us-east-1a", "i-1"), ("us-east-1a", "i-2")];
        let r = request("SCALE_IN", &[("us-east-1a", 1)], &proposed);
        assert!(answer(&t, &r).await.is_empty());
        let r = request("INSTANCE_REFRESH", &[("us-east-1a", 1)], &proposed);
        assert_eq!(answer(&t, &r).await, ["i-1"], "Auto Scaling's own proposal");
    }

    #[tokio::test]
    async fn a_large_group_is_read_a_chunk_at_a_time_until_the_capacity_is_chosen() {
        let ids: Vec<String> = (0..1000).map(|n| format!("i-{n:04}")).collect();
        // The first 150 proposed are busy.
        let t = Table {
            busy: ids.iter().take(150).map(|i| (i.clone(), true)).collect(),
            ..Table::default()
        };
        let proposed: Vec<(&str, &str)> = ids.iter().map(|i| ("us-east-1a", i.as_str())).collect();
        let r = request("SCALE_IN", &[("us-east-1a", 3)], &proposed);
        assert_eq!(answer(&t, &r).await, ["i-0150", "i-0151", "i-0152"]);
        assert_eq!(
            *t.asked.lock().unwrap(),
            [100, 100],
            "two reads of 100, not ten"
        );
    }

    #[test]
    fn the_documented_request_is_read_or_refused_saying_why() {
        let fixture = include_str!("../tests/fixtures/termination-policy-scale-in.json");
        let r = TerminationRequest::parse(serde_json::from_str(fixture).unwrap()).unwrap();
        assert_eq!(r.auto_scaling_group_name, "runners");
        assert_eq!(r.cause, "SCALE_IN");
        assert_eq!(r.capacity_to_terminate.len(), 3);
        assert_eq!(r.capacity_to_terminate[1].capacity, 1);
        assert_eq!(r.instances[2].instance_id, "i-036bc44b6092c01c7");
        assert!(!r.has_more_instances);
        let e = TerminationRequest::parse(
            json!({"CapacityToTerminate": [{"AvailabilityZone": "a", "Capacity": "two"}]}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "not an event warmfleet handles: a termination policy request: invalid type"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_answer_is_what_auto_scaling_reads_and_more_instances_are_noted() {
        let a = TerminationAnswer {
            instance_ids: vec!["i-1".into()],
        };
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            json!({"InstanceIDs": ["i-1"]})
        );
        let mut v = serde_json::to_value(json!({
            "AutoScalingGroupName": "runners", "CapacityToTerminate": [], "Instances": [],
            "Cause": "SCALE_IN", "HasMoreInstances": true
        }))
        .unwrap();
        let r: TerminationRequest = serde_json::from_value(v.take()).unwrap();
        assert!(r.has_more_instances);
    }
}
