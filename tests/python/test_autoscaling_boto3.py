"""The Auto Scaling simulator driven by boto3: an independent client for the same scenarios
the Rust tests drive with aws-sdk-autoscaling."""

import time

import botocore.exceptions
import pytest

from conftest import LAUNCHING, TERMINATING, all_in


def test_a_launch_with_two_hooks_waits_until_both_complete(world):
    world.create("g", 0, 2, 1, [("registration", LAUNCHING, 300, "ABANDON"),
                                ("bootstrap", LAUNCHING, 1200, "ABANDON")])
    [(iid, _)] = world.until("waiting", lambda: world.instances("g"), all_in("Pending:Wait", 1))
    world.complete("g", "registration", iid)
    time.sleep(0.2)
    assert world.instances("g") == [(iid, "Pending:Wait")]
    world.complete("g", "bootstrap", iid)
    world.until("in service", lambda: world.instances("g"), all_in("InService", 1))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        world.asg.complete_lifecycle_action(
            AutoScalingGroupName="g", LifecycleHookName="bootstrap",
            LifecycleActionToken="00000000-0000-4000-8000-000000000000", LifecycleActionResult="CONTINUE")
    assert err.value.response["Error"]["Code"] == "ValidationError"


@pytest.mark.parametrize("world", [60], indirect=True)
def test_a_hook_left_alone_abandons_and_a_heartbeat_keeps_waiting(world):
    world.create("alone", 0, 1, 1, [("bootstrap", LAUNCHING, 30, "ABANDON")])
    world.create("beating", 0, 1, 1, [("bootstrap", LAUNCHING, 30, "ABANDON")])
    [(alone, _)] = world.until("waiting", lambda: world.instances("alone"), all_in("Pending:Wait", 1))
    [(beating, _)] = world.until("waiting", lambda: world.instances("beating"), all_in("Pending:Wait", 1))
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        world.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName="beating", LifecycleHookName="bootstrap", InstanceId=beating)
        time.sleep(0.1)
    assert world.instances("beating") == [(beating, "Pending:Wait")]
    world.until("replaced", lambda: world.instances("alone"),
                lambda xs: len(xs) == 1 and xs[0][0] != alone)


def test_the_warm_pool_hibernates_and_is_used_before_a_cold_launch(world):
    world.create("wp", 0, 3, 0, [("bootstrap", LAUNCHING, 600, "ABANDON")])
    world.asg.put_warm_pool(AutoScalingGroupName="wp", MinSize=1, MaxGroupPreparedCapacity=2,
                            PoolState="Hibernated")
    warm = world.until("warming", lambda: world.warm("wp"), all_in("Warmed:Pending:Wait", 2))
    for iid, _ in warm:
        world.complete("wp", "bootstrap", iid)
    world.until("hibernated", lambda: world.warm("wp"), all_in("Warmed:Hibernated", 2))
    world.asg.set_desired_capacity(AutoScalingGroupName="wp", DesiredCapacity=1)
    [(resumed, _)] = world.until("resumed", lambda: world.instances("wp"), all_in("Pending:Wait", 1))
    assert resumed in [iid for iid, _ in warm]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        world.asg.set_desired_capacity(AutoScalingGroupName="wp", DesiredCapacity=4)
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_scale_in_skips_protected_and_a_terminate_hook_holds(world):
    world.create("si", 0, 3, 2, [("deregistration", TERMINATING, 1800, "CONTINUE")])
    ids = world.until("in service", lambda: world.instances("si"), all_in("InService", 2))
    world.asg.set_instance_protection(AutoScalingGroupName="si", InstanceIds=[ids[0][0]],
                                      ProtectedFromScaleIn=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="si", DesiredCapacity=1)
    world.until("held", lambda: world.instances("si"),
                lambda xs: (ids[1][0], "Terminating:Wait") in xs)
    time.sleep(0.3)
    assert (ids[0][0], "InService") in world.instances("si")
    world.complete("si", "deregistration", ids[1][0])
    world.until("gone", lambda: world.instances("si"), lambda xs: xs == [(ids[0][0], "InService")])


@pytest.mark.parametrize("world", [200000], indirect=True)
def test_old_and_unhealthy_instances_are_replaced(world):
    world.create("old", 1, 2, 1, MaxInstanceLifetime=86400)
    [(first, _)] = world.until("in service", lambda: world.instances("old"), all_in("InService", 1))
    world.until("replaced", lambda: world.instances("old"), lambda xs: len(xs) == 1 and xs[0][0] != first)
    world.create("sick", 1, 2, 1)
    [(sick, _)] = world.until("in service", lambda: world.instances("sick"), all_in("InService", 1))
    world.asg.set_instance_health(InstanceId=sick, HealthStatus="Unhealthy")
    world.until("replaced", lambda: world.instances("sick"),
                lambda xs: len(xs) == 1 and xs[0][0] != sick and xs[0][1] == "InService")


@pytest.mark.parametrize("world", [60], indirect=True)
def test_an_instance_refresh_replaces_every_old_instance_one_ahead(world):
    template = {"LaunchTemplateName": "runners", "Version": "1"}
    world.create("rf", 0, 4, 2, LaunchTemplate=template)
    old = world.until("in service", lambda: world.instances("rf"), all_in("InService", 2))
    world.asg.update_auto_scaling_group(AutoScalingGroupName="rf",
                                        LaunchTemplate={**template, "Version": "2"})
    refresh_id = world.asg.start_instance_refresh(
        AutoScalingGroupName="rf",
        Preferences={"MinHealthyPercentage": 100, "MaxHealthyPercentage": 150, "InstanceWarmup": 30,
                     "SkipMatching": True, "ScaleInProtectedInstances": "Refresh",
                     "StandbyInstances": "Ignore"})["InstanceRefreshId"]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        world.asg.start_instance_refresh(AutoScalingGroupName="rf")
    assert err.value.response["Error"]["Code"] == "InstanceRefreshInProgress"

    def refresh():
        [r] = world.asg.describe_instance_refreshes(
            AutoScalingGroupName="rf", InstanceRefreshIds=[refresh_id])["InstanceRefreshes"]
        return r

    done = world.until("refreshed", refresh, lambda r: r["Status"] == "Successful")
    assert (done["PercentageComplete"], done["InstancesToUpdate"]) == (100, 0)
    assert "ProgressDetails" not in done, "only for a group with a warm pool"
    assert done["Preferences"]["ScaleInProtectedInstances"] == "Refresh"
    assert done["EndTime"] >= done["StartTime"]
    [group] = world.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["rf"])["AutoScalingGroups"]
    assert group["LaunchTemplate"] == {**template, "Version": "2"}
    now = group["Instances"]
    assert [i["LaunchTemplate"]["Version"] for i in now] == ["2", "2"]
    assert not {i["InstanceId"] for i in now} & {iid for iid, _ in old}
    with pytest.raises(botocore.exceptions.ClientError) as err:
        world.asg.cancel_instance_refresh(AutoScalingGroupName="rf")
    assert err.value.response["Error"]["Code"] == "ActiveInstanceRefreshNotFound"
    # What the testbed does not model is refused, not ignored.
    with pytest.raises(botocore.exceptions.ClientError) as err:
        world.asg.start_instance_refresh(AutoScalingGroupName="rf",
                                         Preferences={"CheckpointPercentages": [50, 100]})
    assert "does not model" in err.value.response["Error"]["Message"]
    # As AWS: a maximum needs a minimum.
    with pytest.raises(botocore.exceptions.ClientError) as err:
        world.asg.start_instance_refresh(AutoScalingGroupName="rf",
                                         Preferences={"MaxHealthyPercentage": 120})
    assert err.value.response["Error"]["Code"] == "ValidationError"
