"""The cloud-init user data template, rendered as the Terraform module renders it
(templatefile() in `terraform console`), in every variant the module's inputs allow, each
checked by `cloud-init schema` and read back: the agent's configuration, the package source,
the user's files, packages and commands, in the order cloud-init runs them."""

import base64
import json
import os
import shutil
import subprocess
import tomllib

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "user-data.yaml.tftpl")

BASE = {
    "github_url": "https://github.com/acme",
    "deployment": "1a2b3c4d",
    "runner_mode": "persistent",
    "runner_labels": ["linux", "x64"],
    "runner_group": "",
    "runner_table": "",
    "agent_package_url": "",
    "agent_package_sha256": "",
    "extra_files": [],
    "extra_packages": [],
    "extra_commands": [],
}

VARIANTS = {
    "agent in the AMI": {},
    "package from https, group, provisioning": {
        "runner_group": "builders",
        "runner_table": "ci-runners",
        "agent_package_url": "https://example.com/warmfleet-agent_0.1.0_amd64.deb?X-Amz-Signature=a&b=\"c\"",
        "agent_package_sha256": "0" * 64,
        "extra_files": [{"path": "/etc/docker/daemon.json", "owner": "root:root",
                         "permissions": "0644", "content": "{\"mtu\": 1400}\n"}],
        "extra_packages": ["docker.io", "jq"],
        "extra_commands": ["usermod -aG docker runner", "echo 'it''s \"quoted\" & $HOME'"],
    },
    "ephemeral, package from s3": {
        "runner_mode": "ephemeral",
        "runner_labels": ["linux", "gpu"],
        "agent_package_url": "s3://acme-artifacts/warmfleet-agent_0.1.0_arm64.deb",
    },
}


def tool(name):
    path = shutil.which(name)
    assert path, f"{name} is needed (make test installs cloud-init; terraform is on the machine)"
    return path


def render(tmp_path, variables):
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    expr = f'templatefile("{TEMPLATE}", jsondecode(file("{vars_file}")))\n'
    out = subprocess.run([tool("terraform"), "console"], input=expr, capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "<<EOT" and lines[-1] == "EOT", out.stdout[:200]
    return "\n".join(lines[1:-1]) + "\n"


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_is_valid_cloud_config_and_says_what_it_was_given(tmp_path, name):
    variables = {**BASE, **VARIANTS[name]}
    text = render(tmp_path, variables)
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(text)
    check = subprocess.run([tool("cloud-init"), "schema", "--config-file", str(user_data)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "deprecat" not in (check.stdout + check.stderr).lower(), check.stdout + check.stderr

    doc = yaml.safe_load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    config = tomllib.loads(files["/etc/warmfleet/agent.d/50-cloud-init.toml"]["content"])
    assert config["github_url"] == variables["github_url"]
    assert config["deployment"] == variables["deployment"]
    assert config["runner"]["mode"] == variables["runner_mode"]
    assert config["runner"]["labels"] == variables["runner_labels"]
    assert config["runner"].get("group", "") == variables["runner_group"]
    assert config.get("runner_table", "") == variables["runner_table"]

    source = files.get("/etc/warmfleet/package-source")
    if variables["agent_package_url"]:
        assert source["permissions"] == "0600"
        # An empty checksum line is chomped by YAML; the script reads it as empty too.
        url, sha = (source["content"].splitlines() + [""])[:2]
        assert (url, sha) == (variables["agent_package_url"], variables["agent_package_sha256"])
    else:
        assert source is None

    for f in variables["extra_files"]:
        written = files[f["path"]]
        assert base64.b64decode(written["content"]).decode() == f["content"]
        assert (written["owner"], written["permissions"]) == (f["owner"], f["permissions"])
    assert doc.get("packages", []) == variables["extra_packages"]

    runcmd = doc["runcmd"]
    assert runcmd[1] == ["/usr/local/lib/warmfleet/install-agent"], "install before the rest"
    assert runcmd[2:-2] == [["sh", "-c", c] for c in variables["extra_commands"]]
    assert runcmd[-2] == ["systemctl", "daemon-reload"]
    assert runcmd[-1] == ["systemctl", "enable", "--now", "--no-block", "warmfleet-agent.service"]


def test_the_install_script_refuses_to_go_on_without_a_package(tmp_path):
    text = render(tmp_path, BASE)
    files = {f["path"]: f for f in yaml.safe_load(text)["write_files"]}
    script = tmp_path / "install-agent"
    script.write_text(files["/usr/local/lib/warmfleet/install-agent"]["content"])
    syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert not os.path.exists("/etc/warmfleet/package-source"), "this machine is not an instance"
    run = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert run.returncode == 1
    assert "no package URL was given" in run.stderr
