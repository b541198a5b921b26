//! Which runner versions GitHub still talks to. GitHub refuses a runner on two floors
//! (actions/runner's own source and its users' logs, 2026):
//! - registering needs a minimum version (2.329.0 from 2026): `POST
//!   /actions/runner-registration` answers 404 with "Your runner version is out of date and
//!   can no longer register with GitHub", and `config.sh` exits 1;
//! - a runner with updates disabled that is older than GitHub allows (30 days after a newer
//!   release, sooner for a security fix) gets 403 `RunnerVersionTooOld` on its message poll,
//!   "Runner version vX is deprecated and cannot receive messages.", and the listener exits
//!   with code 1.
//!
//! A runner that may update itself is sent an update instead, which this fake does not model
//! beyond `/_testbed/runners/{id}/update`: it refuses only runners with updates disabled.
//!
//! Neither floor is set unless a test sets it (`PUT /_testbed/runner-versions`).

use semver::Version;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunnerVersions {
    /// The oldest version that may register.
    #[serde(default)]
    pub register: Option<Version>,
    /// The oldest version with updates disabled that may poll for messages.
    #[serde(default)]
    pub listen: Option<Version>,
}

/// A runner's version as it reports it: `2.330.0`, or unparsable (refused as too old).
fn older(reported: &str, floor: &Version) -> bool {
    !Version::parse(reported.trim_start_matches('v')).is_ok_and(|v| v >= *floor)
}

impl RunnerVersions {
    /// The body of the 404 a registration of `version` gets, if it is refused.
    pub fn refuse_registration(&self, version: &str) -> Option<String> {
        let floor = self.register.as_ref()?;
        older(version, floor).then(|| {
            format!(
                "ERROR: Your runner version is out of date and can no longer register with \
                 GitHub. The minimum runner version required to register with GitHub Actions \
                 is now {floor}."
            )
        })
    }

    /// The message of the 403 a poll of `version` gets, if it is refused.
    pub fn refuse_messages(&self, version: &str, disable_update: bool) -> Option<String> {
        let floor = self.listen.as_ref()?;
        (disable_update && older(version, floor)).then(|| {
            format!("Runner version v{version} is deprecated and cannot receive messages.")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(register: &str, listen: &str) -> RunnerVersions {
        RunnerVersions {
            register: Some(Version::parse(register).unwrap()),
            listen: Some(Version::parse(listen).unwrap()),
        }
    }

    #[test]
    fn nothing_is_refused_unless_a_floor_is_set() {
        let open = RunnerVersions::default();
        assert_eq!(open.refuse_registration("2.100.0"), None);
        assert_eq!(open.refuse_messages("2.100.0", true), None);
    }

    #[test]
    fn a_runner_below_a_floor_is_refused_in_github_words() {
        let v = versions("2.329.0", "2.331.0");
        assert_eq!(v.refuse_registration("2.330.0"), None);
        assert!(v
            .refuse_registration("2.328.9")
            .unwrap()
            .contains("is now 2.329.0"));
        assert_eq!(
            v.refuse_messages("2.330.0", true).unwrap(),
            "Runner version v2.330.0 is deprecated and cannot receive messages."
        );
        assert_eq!(v.refuse_messages("2.331.0", true), None);
        // It may update itself: GitHub sends it an update instead.
        assert_eq!(v.refuse_messages("2.330.0", false), None);
        assert!(v.refuse_messages("garbage", true).is_some());
    }
}
