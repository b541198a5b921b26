#!/bin/sh
# The runner's ACTIONS_RUNNER_HOOK_JOB_STARTED: tells warmfleet-agent a job starts, so it
# protects the instance from scale-in for the job's length. Never fails the job.
exec "${WARMFLEET_AGENT:-/usr/bin/warmfleet-agent}" hook job-started
