"""The AMI recipe, checked offline: Packer validates the template (its schema, with the
amazon-ebs builder's own checks), and the provisioning script refuses bad input by name
before it changes anything. (The script's steps run in the real-systemd test.)"""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "warmfleet.pkr.hcl")
SCRIPT = os.path.join(HERE, "provision.sh")
SHA = "0" * 64


def packer():
    path = shutil.which("packer")
    assert path, "packer is needed (make test installs Debian's)"
    return path


def validate(template, tmp_path):
    deb = tmp_path / "warmfleet-agent.deb"
    deb.write_bytes(b"not a real package: validate only checks that it exists")
    return subprocess.run(
        [packer(), "validate", "-var", f"agent_deb={deb}", "-var", "runner_version=2.330.0",
         "-var", f"runner_sha256={SHA}", template],
        capture_output=True, text=True, cwd=HERE)


def test_the_template_is_valid_and_formatted(tmp_path):
    out = validate(TEMPLATE, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    fmt = subprocess.run([packer(), "fmt", "-check", TEMPLATE], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_validation_would_catch_a_misspelt_block(tmp_path):
    """What the check above is worth: a copy with a typo fails it."""
    broken = tmp_path / "broken.pkr.hcl"
    with open(TEMPLATE) as f:
        broken.write_text(f.read().replace("source_ami_filter {", "source_ami_filtre {"))
    shutil.copy(SCRIPT, tmp_path)
    out = validate(str(broken), tmp_path)
    assert out.returncode != 0
    assert "Unsupported block type" in out.stdout + out.stderr


@pytest.mark.parametrize("env, named", [
    ({"RUNNER_VERSION": "2.330.0", "RUNNER_SHA256": SHA}, "AGENT_DEB"),
    ({"AGENT_DEB": "DEB", "RUNNER_SHA256": SHA}, "RUNNER_VERSION"),
    ({"AGENT_DEB": "DEB", "RUNNER_VERSION": "2.330.0"}, "RUNNER_SHA256"),
    ({"AGENT_DEB": "/nonexistent.deb", "RUNNER_VERSION": "2.330.0", "RUNNER_SHA256": SHA},
     "no such file"),
    ({"AGENT_DEB": "DEB", "RUNNER_VERSION": "latest", "RUNNER_SHA256": SHA},
     "not a version like 2.330.0"),
    ({"AGENT_DEB": "DEB", "RUNNER_VERSION": "2.330.0", "RUNNER_SHA256": "abc"},
     "not 64 lowercase hex digits"),
])
def test_the_script_refuses_bad_input_by_name_before_changing_anything(tmp_path, env, named):
    deb = tmp_path / "warmfleet-agent.deb"
    deb.write_bytes(b"")
    env = {k: (str(deb) if v == "DEB" else v) for k, v in env.items()}
    out = subprocess.run(["bash", SCRIPT], env={"PATH": os.environ["PATH"], **env},
                         capture_output=True, text=True)
    assert out.returncode != 0
    if os.geteuid() != 0:
        assert "run as root" in out.stderr
    else:
        assert named in out.stderr, out.stderr
        assert "--- provision" not in out.stdout, "it began before checking its input"
