"""Least privilege, kept in step with the code: each role in infra/iam.tf grants exactly the
AWS actions its component's Rust code calls, no fewer (it would fail in AWS) and no more.

The code side is read from the sources: core/src/aws/*.rs says which SDK operations each
port method makes (`client.<operation>()`, following calls to the adapter's own helpers);
each component's sources say which port methods it calls (on the receivers that hold
ports: `secrets`, `store`, `lifecycle`, `asg`, `commands`, `metrics`, `capacity`,
`ledger`, `claims`, `spending`, `occupancy`)."""

import glob
import os
import re

from test_module import ROOT, load, locals_of, unquote

SERVICES = {"autoscaling.rs": "autoscaling", "secrets.rs": "secretsmanager",
            "ssm.rs": "ssm", "cloudwatch.rs": "cloudwatch", "dynamodb.rs": "dynamodb",
            "github_spending.rs": "dynamodb", "occupancy.rs": "dynamodb"}
PORT_OF_RECEIVER = {"secrets": "SecretStore", "store": "SecretStore", "lifecycle": "Lifecycle",
                    "asg": "Lifecycle", "commands": "Commands", "metrics": "Metrics",
                    "capacity": "Capacity", "ledger": "JobLedger", "claims": "JobLedger",
                    "spending": "GithubSpending", "occupancy": "Occupancy"}
# Actions an operation needs besides its own (AWS's rules, not the code's choice).
IMPLIED = {"secretsmanager:CreateSecret": {"secretsmanager:TagResource"}}  # created with tags
# What each role holds for the platform rather than for calls in the code.
PLATFORM_SIDS = {"Logs", "VpcNetworkInterfaces", "GitHubCredentialKey", "WebhookSecretKey"}

COMPONENTS = {
    # role (as in iam.tf) -> the sources whose calls it must allow
    "registration": ["control/src/registration.rs", "control/src/runtime.rs",
                     "control/src/spending.rs", "core/src/github/credential.rs"],
    "deregistration": ["control/src/deregistration/mod.rs", "control/src/deregistration/sweep.rs",
                       "control/src/runtime.rs", "control/src/spending.rs",
                       "core/src/github/credential.rs"],
    "record-metric": ["control/src/record_metric.rs"],
    "webhook": ["control/src/webhook/mod.rs"],
    "termination-policy": ["control/src/scale_in.rs"],
    "runner": sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "agent/src/**/*.rs"), recursive=True)),
}


def pascal(snake):
    return "".join(part.capitalize() for part in snake.split("_"))


def functions(text):
    """`fn name` -> its body (up to the next fn)."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"\bfn (\w+)", text)]
    return {name: text[start:(starts[i + 1][0] if i + 1 < len(starts) else len(text))]
            for i, (start, name) in enumerate(starts)}


def port_actions():
    """(port trait, method) -> the IAM actions its AWS adapter needs."""
    actions = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "core/src/aws/*.rs"))):
        service = SERVICES.get(os.path.basename(path))
        if service is None:
            continue
        with open(path) as f:
            text = f.read()
        text = text[:text.find("#[cfg(test)]")] if "#[cfg(test)]" in text else text
        bodies = functions(text)

        def ops(name, seen=()):
            body = bodies[name]
            found = {f"{service}:{pascal(op)}" for op in re.findall(r"client\s*\.\s*(\w+)\(", body)}
            for helper in re.findall(r"self\s*\.\s*(\w+)\(", body):
                if helper in bodies and helper not in seen and helper != name:
                    found |= ops(helper, seen + (name,))
            return found

        for impl in re.finditer(r"impl (\w+) for \w+ \{", text):
            trait = impl.group(1)
            end = text.find("\n}\n", impl.end())
            for method in re.findall(r"async fn (\w+)", text[impl.end():end]):
                needed = ops(method)
                for action in list(needed):
                    needed |= IMPLIED.get(action, set())
                actions[(trait, method)] = needed
    return actions


def code_actions(sources):
    by_method = port_actions()
    needed = set()
    for path in sources:
        with open(os.path.join(ROOT, path)) as f:
            text = f.read()
        text = text[:text.find("#[cfg(test)]")] if "#[cfg(test)]" in text else text
        receivers = "|".join(PORT_OF_RECEIVER)
        for receiver, method in re.findall(rf"\b({receivers})\s*\.\s*(\w+)\(", text):
            needed |= by_method.get((PORT_OF_RECEIVER[receiver], method), set())
    return needed


def statements(document):
    """The statements of a data.aws_iam_policy_document, by sid, with their actions: plain
    ones, and those of `dynamic "statement"` blocks (counted as if their condition held)."""
    found = list(document.get("statement", []))
    for block in document.get("dynamic", []):
        for kind, body in block.items():
            if unquote(kind) == "statement":
                found.extend(body.get("content", []))
    return [(unquote(s.get("sid", "")), {unquote(a) for a in s["actions"]}) for s in found]


def documents():
    docs = {}
    for block in load("iam.tf")["data"]:
        for kind, named in block.items():
            if unquote(kind) == "aws_iam_policy_document":
                for name, body in named.items():
                    docs[unquote(name)] = body
    return docs


def granted(role):
    docs = documents()
    names = {"runner": ["agent"],
             "registration": ["lambda_common", "github_credential", "registration"],
             "deregistration": ["lambda_common", "github_credential", "deregistration"],
             "record-metric": ["lambda_common", "record_metric"],
             "webhook": ["lambda_common", "webhook"],
             "termination-policy": ["lambda_common", "termination_policy"]}[role]
    actions = set()
    for name in names:
        for sid, acts in statements(docs[name]):
            if sid not in PLATFORM_SIDS:
                actions |= acts
    return actions


def test_the_code_is_read():
    """The reading above finds what it must (else the comparison below proves nothing)."""
    by_method = port_actions()
    assert by_method[("Lifecycle", "complete")] == {"autoscaling:CompleteLifecycleAction"}
    assert by_method[("SecretStore", "put")] == {
        "secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:TagResource"}
    assert by_method[("Commands", "run")] == {"ssm:SendCommand"}
    assert by_method[("Metrics", "publish")] == {"cloudwatch:PutMetricData"}
    assert "autoscaling:SetInstanceProtection" in code_actions(COMPONENTS["runner"])
    assert by_method[("Capacity", "add_one")] == {"autoscaling:ExecutePolicy"}
    assert by_method[("JobLedger", "record")] == {"dynamodb:UpdateItem"}
    assert by_method[("GithubSpending", "spend")] == {"dynamodb:UpdateItem"}
    assert by_method[("GithubSpending", "spent")] == {"dynamodb:GetItem"}
    assert "dynamodb:GetItem" in code_actions(COMPONENTS["deregistration"])
    assert by_method[("Occupancy", "record")] == {"dynamodb:UpdateItem"}
    assert by_method[("Occupancy", "of")] == {"dynamodb:BatchGetItem"}
    assert by_method[("Occupancy", "busy")] == {"dynamodb:Scan"}
    assert by_method[("Occupancy", "forget")] == {"dynamodb:DeleteItem"}
    assert "dynamodb:UpdateItem" in code_actions(COMPONENTS["runner"])


def test_every_role_grants_exactly_what_its_code_calls():
    report = []
    for role, sources in COMPONENTS.items():
        calls, grants = code_actions(sources), granted(role)
        if calls - grants:
            report.append(f"{role} calls but may not: {sorted(calls - grants)}")
        if grants - calls:
            report.append(f"{role} may but never calls: {sorted(grants - calls)}")
    assert not report, "\n".join(report)


def test_the_github_credential_goes_only_to_the_functions_that_read_it():
    """iam.tf attaches the credential's policy to local.github_functions: exactly the
    roles whose code reads the credential (the comparison above counts it for those)."""
    attached = {unquote(f) for f in locals_of("main.tf")["github_functions"]}
    readers = {role for role, sources in COMPONENTS.items()
               if "core/src/github/credential.rs" in sources}
    assert attached == readers == {"registration", "deregistration"}


def test_the_lambdas_roles_are_the_modules_functions():
    functions_tf = load("lambdas.tf")
    names = set()
    for block in functions_tf.get("locals", []):
        if "all_functions" in block:
            names |= {unquote(k) for k in block["all_functions"]}
    assert names == {r for r in COMPONENTS if r != "runner"}
