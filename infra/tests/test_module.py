"""The Terraform module, checked offline (no provider can be downloaded here): it parses,
it is formatted, every input is documented, and the names it shares with the code agree
with the code's."""

import glob
import json
import os
import re
import shutil
import subprocess

import hcl2
import pytest

INFRA = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(INFRA)
MODULE_FILES = sorted(glob.glob(os.path.join(INFRA, "*.tf")))
EVERY_FILE = sorted(glob.glob(os.path.join(INFRA, "**", "*.tf"), recursive=True))


def load(name):
    with open(os.path.join(INFRA, name)) as f:
        return hcl2.load(f)


def unquote(value):
    """python-hcl2 keeps a string literal's quotes."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def locals_of(name):
    merged = {}
    for block in load(name).get("locals", []):
        merged.update(block)
    return merged


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def rust_consts(path):
    """`pub const NAME: &str = "value";` of a Rust file, by name."""
    return dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', read(path)))


@pytest.mark.parametrize("path", EVERY_FILE, ids=lambda p: os.path.relpath(p, INFRA))
def test_every_file_parses(path):
    with open(path) as f:
        assert hcl2.load(f), f"{path} is empty"


def test_the_module_and_its_examples_are_formatted():
    terraform = shutil.which("terraform")
    assert terraform, "terraform is needed for `terraform fmt` (it is on these machines)"
    out = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", INFRA],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def variables():
    return {unquote(name): body for v in load("variables.tf")["variable"]
            for name, body in v.items()}


def test_every_input_has_a_description_a_type_and_a_row_in_the_readme():
    readme = read("infra/README.md")
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, re.MULTILINE))
    inputs = variables()
    for name, body in inputs.items():
        assert unquote(body.get("description", "")), f"{name} has no description"
        assert "type" in body, f"{name} has no type"
    assert set(inputs) - documented == set(), "inputs missing from infra/README.md"
    assert documented - set(inputs) == set(), "infra/README.md documents inputs that do not exist"


def test_every_variable_a_file_uses_is_declared():
    declared = set(variables())
    for path in MODULE_FILES:
        with open(path) as f:
            used = set(re.findall(r"\bvar\.(\w+)", f.read()))
        assert used <= declared, f"{os.path.basename(path)} uses undeclared {used - declared}"


def test_hook_metric_and_secret_names_are_the_codes():
    naming = rust_consts("core/src/naming.rs")
    main = locals_of("main.tf")
    hooks = {k: unquote(v) for k, v in main["hooks"].items()}
    assert hooks == {
        "registration": naming["HOOK_REGISTRATION"],
        "bootstrap": naming["HOOK_BOOTSTRAP"],
        "deregistration": naming["HOOK_DEREGISTRATION"],
    }
    assert unquote(main["metric_namespace"]) == naming["METRIC_NAMESPACE"]
    metrics = {k: unquote(v) for k, v in main["metrics"].items()}
    assert metrics == {
        "idle": naming["METRIC_IDLE_RUNNERS"],
        "busy": naming["METRIC_BUSY_RUNNERS"],
        "offline": naming["METRIC_OFFLINE_RUNNERS"],
        "orphans": naming["METRIC_ORPHAN_RUNNERS"],
        "all_busy": naming["METRIC_ALL_RUNNERS_BUSY"],
        "api_calls": naming["METRIC_GITHUB_API_CALLS"],
        "rate_left": naming["METRIC_GITHUB_RATE_LIMIT_PERCENT"],
        "queue_time": naming["METRIC_JOB_QUEUE_TIME"],
        "failed": naming["METRIC_FAILED_INSTANCES"],
    }
    assert unquote(main["job_policy"]) == naming["POLICY_JOB_QUEUED"]
    assert unquote(main["secret_prefix"]) == naming["SECRET_PREFIX"]
    assert unquote(main["tag_instance_arn"]) == naming["TAG_INSTANCE_ARN"]
    # The alarms' dimension is the one record_metric publishes.
    dimensions = locals_of("scaling.tf")["dimensions"]
    assert list(dimensions) == [naming["METRIC_DIMENSION_ASG"]]
    # The secrets next to the instances' under the group's prefix, named as the code names
    # them (the sweep tells them apart from instances' by their names).
    lambdas, webhook = read("infra/lambdas.tf"), read("infra/webhook.tf")
    assert 'name                    = "${local.secret_prefix}/${var.name}/tokens/${each.key}"' in lambdas
    assert 'for_each                = toset(["registration", "remove"])' in lambdas
    assert 'format!("{SECRET_PREFIX}/{asg_name}/tokens/{kind}")' in read("core/src/naming.rs")
    assert 'name        = "${local.secret_prefix}/${var.name}/webhook"' in webhook
    assert 'format!("{SECRET_PREFIX}/{asg_name}/webhook")' in read("core/src/naming.rs")
    # The agent looks for its secret under the same prefix.
    agent = read("packaging/agent/agent.toml")
    assert f'secret_prefix = "{naming["SECRET_PREFIX"]}"' in agent


def lambda_environment():
    """Each function's environment variable names, as lambdas.tf sets them."""
    local = locals_of("lambdas.tf")
    common = set(local["common_env"] and re.findall(r"WARMFLEET_\w+", str(local["common_env"])))
    return {unquote(name): (common if "common_env" in str(f["environment"]) else set())
            | set(re.findall(r"WARMFLEET_\w+", str(f["environment"])))
            for name, f in local["all_functions"].items()}


def test_each_lambda_gets_the_environment_its_code_reads():
    config = read("control/src/config.rs")
    # What each settings struct reads: Common for all, then its own.
    def reads(struct):
        body = config[config.index(f"impl {struct} {{"):]
        body = body[:body.index("\n}\n")]
        names = set(re.findall(r'"(WARMFLEET_\w+)"', body))
        if "groups(env)" in body:
            names.add("WARMFLEET_GROUPS")
        if "deployment(env)" in body:
            names.add("WARMFLEET_DEPLOYMENT")
        return names
    common = reads("Common")
    required = set(re.findall(r'required\(env, "(WARMFLEET_\w+)"\)', config))
    code = {
        "registration": common | reads("RegistrationSettings"),
        "deregistration": common | reads("DeregistrationSettings"),
        # Neither counting from Auto Scaling nor the receiver talks to GitHub: no Common.
        "record-metric": reads("MetricSettings"),
        "webhook": reads("WebhookSettings"),
        "termination-policy": reads("TerminationPolicySettings"),
    }
    module = lambda_environment()
    assert set(module) == set(code)
    for function, names in module.items():
        assert names <= code[function], f"{function} is given {names - code[function]}, which its code never reads"
        missing = (required | {"WARMFLEET_GROUPS"}) & code[function] - names
        assert not missing, f"{function} lacks {missing}, which its code requires"
    # The zips are the binaries the workspace builds.
    makefile = read("Makefile")
    for f in locals_of("lambdas.tf")["all_functions"].values():
        assert unquote(f["zip"]) in makefile


def test_lifecycle_rules_match_the_hooks_the_lambdas_handle():
    rules = locals_of("lambdas.tf")["lifecycle_rules"]
    assert unquote(rules["registration"]["hook"]) == "${local.hooks.registration}"
    assert unquote(rules["deregistration"]["hook"]) == "${local.hooks.deregistration}"
    assert unquote(rules["registration"]["detail_type"]) == "EC2 Instance-launch Lifecycle Action"
    assert unquote(rules["deregistration"]["detail_type"]) == "EC2 Instance-terminate Lifecycle Action"
    event = read("control/src/event.rs")
    for rule in rules.values():
        assert unquote(rule["detail_type"]) in event


def template_variables(text):
    """The variables a Terraform template reads: identifiers in its `${...}` and `%{...}`
    expressions (not `$${` escapes), less functions, attributes and `for` loop variables."""
    expressions = re.findall(r"(?<![$%])[$%]\{(.*?)\}", text)
    loop = set(re.findall(r"for\s+(\w+)\s+in", " ".join(expressions)))
    names = set()
    for e in expressions:
        e = re.sub(r'"[^"]*"', "", e)
        for m in re.finditer(r"(?<![.\w])([A-Za-z_]\w*)\b(?!\s*\()", e):
            names.add(m.group(1))
    return names - loop - {"for", "in", "if", "else", "endif", "endfor"}


def test_the_user_data_template_gets_exactly_its_variables():
    wanted = template_variables(read("cloud-init/user-data.yaml.tftpl"))
    runners = read("infra/runners.tf")
    block = runners[runners.index("templatefile("):runners.index("}))")]
    given = set(re.findall(r"^\s+(\w+)\s+=", block, re.MULTILINE))
    assert given == wanted


def duration_seconds(text):
    """`10m`, `2m`, `30s`, `24h` (the agent's durations) in seconds."""
    number, unit = re.fullmatch(r"(\d+)([smh])", text).groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_hook_timeouts_leave_the_agent_room():
    """The hooks' heartbeat timeouts against the agent's own defaults (agent.toml): the
    bootstrap hook outlasts the credential wait plus the listener's start, and the
    terminate hook outlasts three of the agent's heartbeat intervals (a drained job's
    heartbeats keep it alive)."""
    agent = read("packaging/agent/agent.toml")
    timeouts = dict(re.findall(r'^(\w+) = "(\d+[smh])"', agent[agent.index("[timeouts]"):],
                               re.MULTILINE))
    group = load("runners.tf")["resource"]
    asg = next(r['"aws_autoscaling_group"'] for r in group if '"aws_autoscaling_group"' in r)
    hooks = {}
    for hook in asg['"runners"']["initial_lifecycle_hook"]:
        hooks[unquote(hook["name"])] = hook["heartbeat_timeout"]
    assert set(hooks) == {"${local.hooks.registration}", "${local.hooks.bootstrap}",
                          "${local.hooks.deregistration}"}
    credential = duration_seconds(timeouts["credential"])
    listen = duration_seconds(timeouts["listen"])
    heartbeat = duration_seconds(timeouts["heartbeat"])
    assert hooks["${local.hooks.bootstrap}"] > credential + listen
    assert hooks["${local.hooks.deregistration}"] >= 3 * heartbeat


def runner_labels(tmp_path, architecture, default_labels, labels):
    """The labels module, evaluated by `terraform console` (it has no provider)."""
    module = os.path.join(INFRA, "modules", "labels")
    shutil.copy(os.path.join(module, "main.tf"), tmp_path)
    args = ["-var", f"architecture={architecture}",
            "-var", f"default_labels={str(default_labels).lower()}",
            "-var", f"labels={json.dumps(labels)}"]
    out = subprocess.run([shutil.which("terraform"), "console", *args],
                         input="jsonencode(local.labels)", capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(json.loads(out.stdout.strip()))


@pytest.mark.parametrize("architecture, default_labels, labels, expected", [
    # The usual runs-on: [self-hosted, linux, x64] reaches a default fleet.
    ("x86_64", True, [], ["self-hosted", "Linux", "X64"]),
    ("arm64", True, ["gpu"], ["self-hosted", "Linux", "ARM64", "gpu"]),
    # A label the defaults hold already, in any case, is not registered twice.
    ("x86_64", True, ["linux", "x64", "big"], ["self-hosted", "Linux", "X64", "big"]),
    ("x86_64", False, ["linux"], ["linux"]),
])
def test_runners_carry_the_usual_labels_unless_told_not_to(tmp_path, architecture,
                                                           default_labels, labels, expected):
    assert runner_labels(tmp_path, architecture, default_labels, labels) == expected


def test_the_agent_and_the_lambdas_get_the_same_labels():
    """Those the agent registers with (user data) are those the Lambdas mint JIT
    configurations for and route queued jobs by."""
    assert "runner_labels        = local.runner_labels" in read("infra/runners.tf")
    lambdas = read("infra/lambdas.tf")
    assert lambdas.count('join(",", local.runner_labels)') == 2
    assert "var.runner_labels" not in lambdas + read("infra/runners.tf")
    main = read("infra/main.tf")
    assert "architecture   = data.aws_ami.runner.architecture" in main
    assert "runner_labels = module.labels.labels" in main


def test_every_component_of_a_deployment_gets_its_id():
    """The agents (user data) and every Lambda that lists, labels or routes to runners do
    it by the same deployment label (record_metric counts instances and termination-policy
    chooses among them: neither looks at runners)."""
    assert "deployment           = local.deployment" in read("infra/runners.tf")
    module = lambda_environment()
    instances_only = {"record-metric", "termination-policy"}
    assert all("WARMFLEET_DEPLOYMENT" not in module[f] for f in instances_only)
    assert all("WARMFLEET_DEPLOYMENT" in names for f, names in module.items()
               if f not in instances_only), module
    main = read("infra/main.tf")
    assert 'var.deployment_id != "" ? var.deployment_id : substr(sha256(' in main
