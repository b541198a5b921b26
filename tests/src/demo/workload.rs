//! The demo's jobs: when each is queued (world seconds after the start), how long it runs
//! and what labels it asks for, from a named pattern or a CSV file.

use super::settings::{Pattern, Workload};
use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// World seconds after the workload starts.
    pub at: f64,
    /// World seconds it runs.
    pub duration: f64,
    pub labels: Vec<String>,
}

/// `count` jobs by `workload`'s pattern, sorted by arrival, the same for the same seed.
/// The pattern puts `workload.jobs` jobs in each `workload.length`, and repeats: more jobs
/// than that take more periods, at the same rate.
pub fn generate(workload: &Workload, count: u32, seed: u64) -> Vec<PlannedJob> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let length = workload.length.as_secs_f64();
    let per = workload.jobs.max(1);
    let n = f64::from(per);
    let bursts = f64::from(5.min(per));
    let mut jobs: Vec<PlannedJob> = (0..count)
        .map(|i| {
            let period = f64::from(i / per) * length;
            let k = f64::from(i % per);
            // Stratified: one uniform draw in each of `per` equal slices of [0, 1).
            let u = (k + rng.gen::<f64>()) / n;
            let at = match workload.pattern {
                Pattern::Steady => u * length,
                Pattern::Bursts => {
                    let burst = (k * bursts / n).floor();
                    burst * length / bursts + rng.gen::<f64>() * 10.0
                }
                // The inverse of the half-sine's cumulative share (1 - cos(pi t / L)) / 2.
                Pattern::Workday => length / std::f64::consts::PI * (1.0 - 2.0 * u).acos(),
            };
            PlannedJob {
                at: period + at.min(length),
                duration: workload.job_duration.as_secs_f64() * rng.gen_range(0.5..1.5),
                labels: workload.labels.clone(),
            }
        })
        .collect();
    jobs.sort_by(|a, b| a.at.total_cmp(&b.at));
    jobs
}

#[derive(Debug, serde::Deserialize)]
struct Row {
    queued_at: f64,
    duration: f64,
    #[serde(default)]
    labels: String,
}

/// Jobs from a CSV file with the header `queued_at,duration,labels`: world seconds after
/// the start, world seconds of running, labels separated by spaces or commas (quote the
/// field then). Rows may come in any order; the first `limit` by arrival are kept.
pub fn from_csv(path: &Path, limit: Option<u32>) -> anyhow::Result<Vec<PlannedJob>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("reading the workload {}", path.display()))?;
    let mut jobs = vec![];
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        // Line 1 is the header.
        let line = i + 2;
        let row = row.with_context(|| format!("{} line {line}", path.display()))?;
        if !(row.queued_at.is_finite() && row.queued_at >= 0.0) {
            bail!(
                "{} line {line}: queued_at must be 0 or more seconds",
                path.display()
            );
        }
        if !(row.duration.is_finite() && row.duration > 0.0) {
            bail!(
                "{} line {line}: duration must be more than 0 seconds",
                path.display()
            );
        }
        let labels: Vec<String> = row
            .labels
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if labels.is_empty() {
            bail!(
                "{} line {line}: a job needs at least one label",
                path.display()
            );
        }
        jobs.push(PlannedJob {
            at: row.queued_at,
            duration: row.duration,
            labels,
        });
    }
    if jobs.is_empty() {
        bail!("{} holds no jobs", path.display());
    }
    jobs.sort_by(|a, b| a.at.total_cmp(&b.at));
    if let Some(n) = limit {
        jobs.truncate(n as usize);
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn workload(pattern: Pattern) -> Workload {
        Workload {
            pattern,
            jobs: 200,
            length: Duration::from_secs(1000),
            job_duration: Duration::from_secs(100),
            ..Workload::default()
        }
    }

    #[test]
    fn patterns_are_repeatable_and_within_the_length() {
        for pattern in [Pattern::Steady, Pattern::Bursts, Pattern::Workday] {
            let jobs = generate(&workload(pattern), 200, 7);
            assert_eq!(jobs, generate(&workload(pattern), 200, 7));
            assert_ne!(jobs, generate(&workload(pattern), 200, 8));
            assert_eq!(jobs.len(), 200);
            assert!(jobs.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(jobs.iter().all(|j| (0.0..=1000.0).contains(&j.at)));
            assert!(jobs.iter().all(|j| (50.0..150.0).contains(&j.duration)));
        }
    }

    #[test]
    fn patterns_have_their_shape() {
        let in_range = |jobs: &[PlannedJob], from: f64, to: f64| {
            jobs.iter().filter(|j| j.at >= from && j.at < to).count()
        };
        // Steady: each tenth of the length gets a tenth of the jobs.
        let steady = generate(&workload(Pattern::Steady), 200, 1);
        assert!((0..10)
            .all(|k| in_range(&steady, f64::from(k) * 100.0, f64::from(k + 1) * 100.0) == 20));
        // Bursts: five bursts of 40, each within 10 s of its start.
        let bursts = generate(&workload(Pattern::Bursts), 200, 1);
        for k in 0..5 {
            assert_eq!(
                in_range(&bursts, f64::from(k) * 200.0, f64::from(k) * 200.0 + 10.0),
                40
            );
        }
        // Workday: the middle fifth gets more than the first and last fifths together.
        let day = generate(&workload(Pattern::Workday), 200, 1);
        let middle = in_range(&day, 400.0, 600.0);
        assert!(
            middle > in_range(&day, 0.0, 200.0) + in_range(&day, 800.0, 1001.0),
            "{middle}"
        );
    }

    #[test]
    fn more_jobs_than_a_period_holds_repeat_the_pattern_at_its_rate() {
        let w = Workload {
            jobs: 50,
            ..workload(Pattern::Bursts)
        };
        let jobs = generate(&w, 120, 3);
        assert_eq!(jobs.len(), 120);
        let in_period = |p: f64| {
            jobs.iter()
                .filter(|j| j.at >= p * 1000.0 && j.at < (p + 1.0) * 1000.0)
                .count()
        };
        assert_eq!(
            (in_period(0.0), in_period(1.0), in_period(2.0)),
            (50, 50, 20)
        );
        // Each period starts with a burst of 10.
        assert_eq!(
            jobs.iter()
                .filter(|j| (1000.0..1010.0).contains(&j.at))
                .count(),
            10
        );
    }

    #[test]
    fn csv_rows_become_jobs_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jobs.csv");
        std::fs::write(
            &file,
            "queued_at,duration,labels\n30,60,linux\n0,120,\"linux,x64\"\n10,5,gpu big\n",
        )
        .unwrap();
        let jobs = from_csv(&file, None).unwrap();
        assert_eq!(jobs[0].labels, ["linux", "x64"]);
        assert_eq!(jobs[1].labels, ["gpu", "big"]);
        assert_eq!((jobs[2].at, jobs[2].duration), (30.0, 60.0));
        assert_eq!(from_csv(&file, Some(2)).unwrap().len(), 2);
    }

    #[test]
    fn bad_csv_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jobs.csv");
        for (body, expected) in [
            (
                "queued_at,duration,labels\n0,60,linux\n5,-1,linux\n",
                "line 3: duration",
            ),
            ("queued_at,duration,labels\nsoon,60,linux\n", "line 2"),
            (
                "queued_at,duration,labels\n0,60,\n",
                "line 2: a job needs at least one label",
            ),
            ("queued_at,duration,labels\n", "holds no jobs"),
        ] {
            std::fs::write(&file, body).unwrap();
            let e = format!("{:#}", from_csv(&file, None).unwrap_err());
            assert!(
                e.contains(expected) && e.contains("jobs.csv"),
                "{body:?}: {e}"
            );
        }
    }
}
