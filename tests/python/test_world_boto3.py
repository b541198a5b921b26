"""EventBridge to Lambda, SSM Run Command, CloudWatch alarms and scaling policies, driven by
boto3: an independent client beside the Rust tests' aws-sdk clients."""

import time

import botocore.exceptions
import pytest

from conftest import LAMBDA, LAUNCHING, all_in


def test_put_metric_data_from_boto3_lands_and_alarms_report_their_state(world):
    cw = world.client("cloudwatch")
    dims = [{"Name": "AutoScalingGroupName", "Value": "g"}]
    cw.put_metric_data(Namespace="Warmfleet", MetricData=[
        {"MetricName": "IdleRunners", "Dimensions": dims, "Value": 3.0},
        {"MetricName": "IdleRunners", "Dimensions": dims, "Value": 5.0}])
    now = time.time()
    stats = cw.get_metric_statistics(
        Namespace="Warmfleet", MetricName="IdleRunners", Dimensions=dims,
        StartTime=now - 600, EndTime=now + 600, Period=3600, Statistics=["Sum", "Maximum"])
    assert sum(p["Sum"] for p in stats["Datapoints"]) == 8.0
    assert max(p["Maximum"] for p in stats["Datapoints"]) == 5.0
    cw.put_metric_alarm(
        AlarmName="idle-low", Namespace="Warmfleet", MetricName="IdleRunners", Dimensions=dims,
        Statistic="Minimum", Period=60, EvaluationPeriods=1, Threshold=1.0,
        ComparisonOperator="LessThanThreshold")
    cw.set_alarm_state(AlarmName="idle-low", StateValue="ALARM", StateReason="by hand")
    [alarm] = cw.describe_alarms(AlarmNames=["idle-low"])["MetricAlarms"]
    assert (alarm["StateValue"], alarm["StateReason"]) == ("ALARM", "by hand")
    assert alarm["Threshold"] == 1.0
    with pytest.raises(botocore.exceptions.ClientError) as err:
        cw.set_alarm_state(AlarmName="nope", StateValue="OK", StateReason="x")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


def test_a_step_policy_run_by_hand_changes_the_group_by_its_step(world):
    world.create("g", 0, 6, 1)
    arn = world.asg.put_scaling_policy(
        AutoScalingGroupName="g", PolicyName="out", PolicyType="StepScaling",
        AdjustmentType="ChangeInCapacity", StepAdjustments=[
            {"MetricIntervalUpperBound": 0.0, "MetricIntervalLowerBound": -2.0, "ScalingAdjustment": 1},
            {"MetricIntervalUpperBound": -2.0, "ScalingAdjustment": 3}])["PolicyARN"]
    assert arn.endswith(":autoScalingGroupName/g:policyName/out")
    world.asg.execute_policy(AutoScalingGroupName="g", PolicyName="out", MetricValue=-3.0,
                             BreachThreshold=1.0)
    group = world.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["g"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 4
    [policy] = world.asg.describe_policies(AutoScalingGroupName="g")["ScalingPolicies"]
    assert policy["PolicyType"] == "StepScaling"
    assert [s["ScalingAdjustment"] for s in policy["StepAdjustments"]] == [1, 3]


@pytest.mark.parametrize("world", [(1, "--instance-command", "exec sleep 600")], indirect=True)
def test_send_command_runs_on_the_one_instance_named(world):
    world.create("g", 0, 2, 2)
    ids = world.until("in service", lambda: world.instances("g"), all_in("InService", 2))
    ssm = world.client("ssm")
    target = ids[0][0]
    cid = ssm.send_command(InstanceIds=[target], DocumentName="AWS-RunShellScript",
                           Parameters={"commands": ["echo hello", "exit 0"]})["Command"]["CommandId"]
    out = world.until("done", lambda: ssm.get_command_invocation(CommandId=cid, InstanceId=target),
                      lambda o: o["Status"] not in ("Pending", "InProgress"))
    assert (out["Status"], out["ResponseCode"], out["StandardOutputContent"]) == ("Success", 0, "hello\n")
    rows = ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
    assert [r["InstanceId"] for r in rows] == [target]
    assert rows[0]["CommandPlugins"][0]["Output"] == "hello\n"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ssm.send_command(InstanceIds=["i-00000000000000000"], DocumentName="AWS-RunShellScript",
                         Parameters={"commands": ["true"]})
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"


def test_a_rule_put_by_boto3_sends_lifecycle_events_to_the_function(world):
    world.control("functions", {"name": "complete", "command": LAMBDA, "timeout_seconds": 30,
                                "environment": {"TESTBED_LAMBDA": "complete-hook"}})
    events = world.client("events")
    events.put_rule(Name="registration", EventPattern=(
        '{"source": ["aws.autoscaling"], "detail": {"LifecycleHookName": ["registration"]}}'))
    events.put_targets(Rule="registration", Targets=[
        {"Id": "complete", "Arn": "arn:aws:lambda:us-east-1:123456789012:function:complete"}])
    [rule] = events.list_rules(NamePrefix="reg")["Rules"]
    assert rule["State"] == "ENABLED"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        events.put_rule(Name="bad", ScheduleExpression="rate(1 minutes)")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    world.create("g", 0, 1, 1, [("registration", LAUNCHING, 300, "ABANDON")])
    world.until("in service", lambda: world.instances("g"), all_in("InService", 1))
    [call] = world.control("invocations")
    assert call["outcome"] == "success"
