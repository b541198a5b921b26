"""The module against the AWS provider's schema, offline: `terraform validate` needs the
provider, which cannot be downloaded here, but the provider's schema is published on npm
inside the generated CDK for Terraform bindings (@cdktf/provider-aws 19.65.1 is built from
hashicorp/aws 5.99.1; `make provider-schema` unpacks it). From each resource's and data
source's bindings this reads the arguments and blocks it accepts (nested ones too), which
top-level arguments are required, and the attributes it exports; then every resource and
data block in the module, `dynamic` blocks included, and every reference to another
resource's attribute must match."""

import glob
import os
import re

import pytest

from test_module import INFRA, ROOT, load, unquote

SCHEMA = os.environ.get("WARMFLEET_PROVIDER_SCHEMA",
                        os.path.join(ROOT, ".deps/provider-aws/package"))
META = {"count", "for_each", "depends_on", "lifecycle", "provider"}


def bindings(kind, type_name):
    """The generated JavaScript of a resource (`resource`) or data source (`data`)."""
    name = type_name.removeprefix("aws_").replace("_", "-")
    lib = name if kind == "resource" else f"data-aws-{name}"
    path = os.path.join(SCHEMA, "lib", lib, "index.js")
    assert os.path.exists(path), f"{kind} {type_name}: no such type in the provider ({path})"
    with open(path) as f:
        return f.read()


def object_keys(body):
    """`key: converter(...)` lines of a returned object literal -> {key: converter or None}."""
    keys = {}
    for key, converter in re.findall(r"^\s+(\w+): ([\w.]+)\(", body, re.MULTILINE):
        keys[key] = None if converter.startswith("cdktf.") else converter
    for key, converter in re.findall(r"^\s+(\w+): cdktf\.listMapper\((\w+), true\)", body, re.MULTILINE):
        keys[key] = converter
    return keys


class Schema:
    def __init__(self, js):
        self.js = js
        top = re.search(r"synthesizeAttributes\(\) \{\s*return \{(.*?)\n\s*\};", js, re.DOTALL)
        assert top, "no synthesizeAttributes in the bindings"
        self.top = object_keys(top.group(1))
        # The resource's own class: an optional argument or block has a reset method there,
        # a required one does not.
        own = re.search(r"extends cdktf\.Terraform(Resource|DataSource) \{", js)
        assert own, "no resource or data source class in the bindings"
        main = js[own.end():]

        def pascal(snake):
            return "".join(p.capitalize() for p in snake.split("_"))

        self.required = {k for k in self.top
                         if k != "id" and f"reset{pascal(k)}()" not in main
                         and (f"set {pascal(k)[0].lower()}{pascal(k)[1:]}(" in main
                              or f"put{pascal(k)}(" in main)}
        self.exported = set(re.findall(r"get\w*Attribute\('(\w+)'\)", js)) | set(
            re.findall(r"interpolationForAttribute\('(\w+)'\)", js)) | set(self.top)

    def block(self, converter):
        body = re.search(rf"function {converter}\(struct\) \{{.*?return \{{(.*?)\n\s*\}};",
                         self.js, re.DOTALL)
        assert body, f"no converter {converter}"
        return object_keys(body.group(1))


def check_body(schema, keys, body, where, errors):
    for key, value in body.items():
        key = unquote(key)
        if key.startswith("__") or key in META:
            continue
        if key == "dynamic":
            for dyn in value:
                for name, spec in dyn.items():
                    name = unquote(name)
                    if name not in keys or keys[name] is None:
                        errors.append(f"{where}: no block {name}")
                        continue
                    for content in spec.get("content", []):
                        check_body(schema, schema.block(keys[name]), content,
                                   f"{where}.{name}", errors)
            continue
        if key not in keys:
            errors.append(f"{where}: no argument or block {key}")
            continue
        if keys[key] is not None and isinstance(value, list) and value and isinstance(value[0], dict):
            for block in value:
                check_body(schema, schema.block(keys[key]), block, f"{where}.{key}", errors)


def blocks(kind):
    """(type, name, body, file) of every resource or data block of the module."""
    found = []
    for path in sorted(glob.glob(os.path.join(INFRA, "*.tf"))):
        for block in load(os.path.basename(path)).get(kind, []):
            for type_name, named in block.items():
                for name, body in named.items():
                    found.append((unquote(type_name), unquote(name), body, os.path.basename(path)))
    return found


def test_the_schema_is_unpacked():
    assert os.path.isdir(os.path.join(SCHEMA, "lib")), \
        f"{SCHEMA} is missing (make provider-schema unpacks it)"
    schema = Schema(bindings("resource", "aws_autoscaling_group"))
    assert "warm_pool" in schema.top and "max_size" in schema.required
    assert "reuse_on_scale_in" in schema.block(schema.block(schema.top["warm_pool"])["instance_reuse_policy"])


@pytest.mark.parametrize("kind", ["resource", "data"])
def test_every_block_uses_only_what_the_provider_accepts_and_all_it_requires(kind):
    errors = []
    for type_name, name, body, path in blocks(kind):
        schema = Schema(bindings(kind, type_name))
        where = f"{path}: {type_name}.{name}"
        check_body(schema, schema.top, body, where, errors)
        given = {unquote(k) for k in body}
        missing = schema.required - given - {"id"}
        if missing:
            errors.append(f"{where}: lacks required {sorted(missing)}")
    assert not errors, "\n".join(errors)


def test_every_reference_names_an_attribute_the_type_exports():
    declared = {("resource", t, n): t for t, n, _, _ in blocks("resource")}
    declared |= {("data", t, n): t for t, n, _, _ in blocks("data")}
    errors = []
    for path in sorted(glob.glob(os.path.join(INFRA, "*.tf"))):
        with open(path) as f:
            text = f.read()
        for data, type_name, name, attribute in re.findall(
                r"(?<![\w.])(data\.)?(aws_\w+)\.(\w+)(?:\[[^\]]+\])?\.(\w+)", text):
            kind = "data" if data else "resource"
            if (kind, type_name, name) not in declared:
                errors.append(f"{os.path.basename(path)}: {data}{type_name}.{name} is not declared")
                continue
            if attribute not in Schema(bindings(kind, type_name)).exported:
                errors.append(f"{os.path.basename(path)}: {data}{type_name}.{name}.{attribute} is not an attribute")
    assert not errors, "\n".join(errors)


def test_the_schema_is_the_provider_the_module_asks_for():
    import json
    with open(os.path.join(SCHEMA, "package.json")) as f:
        version = json.load(f)["cdktf"]["provider"]["version"]
    constraint = unquote(load("versions.tf")["terraform"][0]["required_providers"][0]["aws"]["version"])
    assert constraint == ">= 5.40, < 6.0"
    major, minor = (int(x) for x in version.split(".")[:2])
    assert major == 5 and minor >= 40, version
