"""The testbed's AWS world for boto3 tests: a `warmfleet-testbed aws` process and clients."""

import json
import os
import re
import subprocess
import time
import urllib.request

import boto3
import pytest

TESTBED = os.environ.get("WARMFLEET_TESTBED", "target/debug/warmfleet-testbed")
# The trivial lambda_runtime function built beside the testbed.
LAMBDA = os.path.join(os.path.dirname(TESTBED), "testbed-lambda")
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


class World:
    def __init__(self, time_scale, *args):
        self.proc = subprocess.Popen(
            [TESTBED, "aws", "--listen", "127.0.0.1:0", "--time-scale", str(time_scale),
             "--boot-delay", "0s", "--resume-delay", "0s", "--hibernate-delay", "0s", "--no-moto",
             *args],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        assert match, f"unexpected first line {line!r}"
        self.url = match.group(1)
        self.asg = self.client("autoscaling")

    def client(self, service):
        return boto3.client(
            service, endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="testbed", aws_secret_access_key="testbed")

    def control(self, what, body=None):
        """The world's control API: GET a list, or POST a JSON body."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/_testbed/aws/{what}", data=data,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            text = r.read()
            return json.loads(text) if text else None

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def create(self, name, mn, mx, desired, hooks=(), **extra):
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=mn, MaxSize=mx, DesiredCapacity=desired,
            LifecycleHookSpecificationList=[
                {"LifecycleHookName": h, "LifecycleTransition": t, "HeartbeatTimeout": timeout,
                 "DefaultResult": default} for (h, t, timeout, default) in hooks],
            **extra)

    def instances(self, group):
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return [(i["InstanceId"], i["LifecycleState"]) for i in g["Instances"]]

    def warm(self, group):
        return [(i["InstanceId"], i["LifecycleState"])
                for i in self.asg.describe_warm_pool(AutoScalingGroupName=group)["Instances"]]

    def until(self, what, read, check, within=15):
        deadline = time.monotonic() + within
        while True:
            now = read()
            if check(now):
                return now
            assert time.monotonic() < deadline, f"never {what}: {now}"
            time.sleep(0.05)

    def complete(self, group, hook, instance):
        self.asg.complete_lifecycle_action(
            AutoScalingGroupName=group, LifecycleHookName=hook, InstanceId=instance,
            LifecycleActionResult="CONTINUE")


@pytest.fixture
def world(request):
    param = getattr(request, "param", 1)
    w = World(*param) if isinstance(param, tuple) else World(param)
    yield w
    w.close()


def all_in(state, n):
    return lambda xs: len(xs) == n and all(s == state for _, s in xs)


