"""schemathesis over every route of /openapi.json, against a `rotor dev` of its own.

The run (configuration: tests/schemathesis/schemathesis.toml) uses a Manager token from the dev
instance's info file, sets `Bluemix-Instance`, and runs every phase (examples, coverage, fuzzing,
stateful) with every check but the one the configuration turns off (soft deletion). It must end with no failure: no 5xx, every response as the document
describes it, every schema-valid request accepted (or refused only for what no schema can know:
a key that does not exist or is in another state, a ciphertext that does not open), every
schema-violating request refused. Instance policies that could lock the run out (allowedIP,
allowedNetwork) are left out: the run reads the document from a copy without them in any `enum`
(see `EXCLUDED_POLICIES`).

Environment:
  ROTOR_BIN                   the rotor binary (default: target/debug/rotor)
  ROTOR_SCHEMATHESIS_PYTHON   the interpreter schemathesis is installed for (scripts/test.sh makes
                              a virtual environment; see there why it is not this one)
  ROTOR_SCHEMATHESIS_SEED     the generation seed (default: a fixed one, so runs repeat)
  ROTOR_SCHEMATHESIS_EXAMPLES examples per operation in the fuzzing phase (default: the config's)
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import _rotor_bin, _stop, _tail
from kphelpers import REPO_ROOT

CONFIG = REPO_ROOT / "tests" / "schemathesis" / "schemathesis.toml"
DEFAULT_SEED = "20261201"
#: Instance policy types that could lock the run out of its own instance.
EXCLUDED_POLICIES = ("allowedIP", "allowedNetwork")


@pytest.fixture(scope="module")
def own_dev(tmp_path_factory):
    """A `rotor dev` for this run alone: what schemathesis creates and deletes stays in it."""
    binary = _rotor_bin()
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist: build it with 'cargo build -p rotor-cli' or set ROTOR_BIN")
    base = tmp_path_factory.mktemp("rotor-schemathesis")
    info_file = base / "info.json"
    stderr_path = base / "dev.stderr.log"
    env = dict(os.environ)
    env.setdefault("ROTOR_LOG", "info")
    for name in ("ROTOR_HOME", "ROTOR_ENDPOINT", "ROTOR_API_KEY", "ROTOR_PASSWORD"):
        env.pop(name, None)
    with open(base / "dev.stdout.log", "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [str(binary), "dev", "--units", "2", "--recovery-units", "1", "--dir", str(base / "dev"),
             "--info-file", str(info_file), "--purge-after-seconds", "0"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=str(base),
        )
    try:
        deadline = time.monotonic() + float(os.environ.get("ROTOR_START_TIMEOUT", "300"))
        info = None
        while info is None and time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"rotor dev exited with {process.returncode}:\n{_tail(stderr_path)}")
            try:
                info = json.loads(info_file.read_text())
            except (OSError, json.JSONDecodeError):
                time.sleep(0.1)
        if info is None:
            pytest.fail(f"rotor dev did not write {info_file} in time:\n{_tail(stderr_path)}")
    except BaseException:
        _stop(process)
        raise
    yield info, base
    code = _stop(process)
    assert code == 0, f"rotor dev exited with {code} after SIGTERM:\n{_tail(stderr_path)}"
    logs = [stderr_path, *sorted((base / "dev").rglob("unit.log"))]
    panics = [str(log) for log in logs if "panicked" in log.read_bytes().decode(errors="replace")]
    assert not panics, f"a process panicked during the schemathesis run: {panics}"


def _without_excluded_policies(node):
    """The document without the excluded policy types wherever an `enum` lists them, and
    without the `oneOf` alternatives that describe only an excluded type."""
    if isinstance(node, dict):
        out = {key: _without_excluded_policies(value) for key, value in node.items()}
        if isinstance(out.get("enum"), list):
            out["enum"] = [value for value in out["enum"] if value not in EXCLUDED_POLICIES]
        if isinstance(out.get("oneOf"), list):
            out["oneOf"] = [choice for choice in out["oneOf"] if not _only_excluded(choice)]
        return out
    if isinstance(node, list):
        return [_without_excluded_policies(value) for value in node]
    return node


def _only_excluded(schema) -> bool:
    """Whether a schema describes a policy whose type list the exclusion emptied."""
    kind = schema.get("properties", {}).get("policy_type", {}) if isinstance(schema, dict) else {}
    return kind.get("enum") == []


def test_excluded_policies_leave_the_rest():
    schema = {"properties": {"policy_type": {"type": "string", "enum": ["dualAuthDelete", "allowedIP"]}}}
    assert _without_excluded_policies(schema) == {
        "properties": {"policy_type": {"type": "string", "enum": ["dualAuthDelete"]}}
    }
    alternatives = {"oneOf": [
        {"properties": {"policy_type": {"enum": ["allowedIP"]}}},
        {"properties": {"policy_type": {"enum": ["metrics"]}}},
    ]}
    assert _without_excluded_policies(alternatives) == {
        "oneOf": [{"properties": {"policy_type": {"enum": ["metrics"]}}}]
    }


def _schemathesis() -> list[str]:
    python = os.environ.get("ROTOR_SCHEMATHESIS_PYTHON")
    if not python:
        pytest.fail("ROTOR_SCHEMATHESIS_PYTHON is not set: run scripts/test.sh, which installs schemathesis")
    return [python, "-m", "schemathesis.cli"]


def test_schemathesis_finds_nothing(own_dev):
    info, base = own_dev
    endpoint = info["endpoint"].rstrip("/")
    ca_cert = info["ca_cert"]
    response = requests.post(
        endpoint + "/identity/token",
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": info["api_keys"]["manager"]},
        timeout=30, verify=ca_cert,
    )
    assert response.status_code == 200, response.text
    document = requests.get(endpoint + "/openapi.json", timeout=30, verify=ca_cert).json()
    schema_file = base / "openapi.json"
    schema_file.write_text(json.dumps(_without_excluded_policies(document)))
    operational = [unit["id"] for unit in info["units"] if unit["kind"] == "operational"]
    env = dict(os.environ)
    env.update({
        "ROTOR_TOKEN": response.json()["access_token"],
        "ROTOR_INSTANCE": str(info["instance"]),
        "ROTOR_UNIT": operational[0],
        "REQUESTS_CA_BUNDLE": ca_cert,
    })
    report = base / "schemathesis.log"
    command = [
        *_schemathesis(), "--config-file", str(CONFIG), "run", str(schema_file), "--url", endpoint,
        "--tls-verify", ca_cert, "--workers", "2",
        "--seed", os.environ.get("ROTOR_SCHEMATHESIS_SEED", DEFAULT_SEED),
    ]
    if os.environ.get("ROTOR_SCHEMATHESIS_EXAMPLES"):
        command += ["--max-examples", os.environ["ROTOR_SCHEMATHESIS_EXAMPLES"]]
    started = time.monotonic()
    with open(report, "wb") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                              cwd=str(base), timeout=900).returncode
    seconds = time.monotonic() - started
    text = report.read_text(errors="replace")
    summary = text[text.rfind("SUMMARY"):] if "SUMMARY" in text else text[-3000:]
    print(f"schemathesis ran {seconds:.0f} s:\n{summary}")
    assert code == 0, f"schemathesis found problems (full log {report}):\n{text[-20000:]}"
