#!/bin/sh
# The runner's ACTIONS_RUNNER_HOOK_JOB_COMPLETED: tells warmfleet-agent the job is over, so
# it lifts the instance's scale-in protection. Never fails the job.
exec "${WARMFLEET_AGENT:-/usr/bin/warmfleet-agent}" hook job-completed
