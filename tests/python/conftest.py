"""Session fixtures for driving a real `rotor dev` instance through IBM's Key Protect SDK.

One `rotor dev` process (2 operational units, 1 recovery unit, purge allowed at once) serves the
whole session. Its stdout and stderr go to files next to its state directory; at the end of the
session the fixture stops it with SIGTERM and checks that no secret the tests handled (DEK
plaintexts, standard and imported key material) appears in the service's output, in any unit's
log or in the keystore's bytes.

Environment:
  ROTOR_BIN            the rotor binary (default: target/debug/rotor under the repository root)
  ROTOR_LOG            log filter of the dev process and its units (default here: debug, so that
                       the secret search covers as much log output as possible)
  ROTOR_START_TIMEOUT  seconds to wait for the instance to be initialized (default 300)
  ROTOR_DEV_ARGS       more arguments for `rotor dev`, e.g. "--postgres --replicas 2": with
                       several replicas the suite talks to them through a round-robin TCP proxy,
                       as clients reach replicas through a load balancer
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shlex
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import requests
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator, IAMAuthenticator
from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2

from kphelpers import REPO_ROOT, RoundRobinProxy, Secrets, b64url, find_leaks


@dataclass
class Rotor:
    """A running `rotor dev` instance."""

    endpoint: str
    instance: str
    api_key: str
    dir: Path
    info: dict
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    secrets: Secrets = field(default_factory=Secrets)

    def leak_files(self) -> list[Path]:
        files = [self.stderr_path, self.stdout_path]
        files += sorted(self.dir.rglob("unit.log"))
        service = self.dir / "service"
        files += sorted((service / "replicas").glob("*.log"))
        files += self.keystore_files()
        return files

    def unit_logs(self) -> list[Path]:
        return sorted(self.dir.rglob("unit.log"))

    def keystore_files(self) -> list[Path]:
        files = [p for p in (self.dir / "service").glob("keys.db*") if p.is_file()]
        # With --postgres: the throwaway cluster's tables and write-ahead log.
        data = self.dir / "postgres" / "data"
        for part in ("base", "pg_wal"):
            files += [p for p in (data / part).rglob("*") if p.is_file()]
        return sorted(files)

    #: The identities `rotor dev` makes (info file `api_keys`) and their roles.
    ROLES = {
        "reader": "Reader",
        "writer": "Writer",
        "manager": "Manager",
        "manager2": "Manager",
        "admin": "Crypto Unit Administrator",
    }

    def api_key_of(self, name: str) -> Optional[str]:
        return (self.info.get("api_keys") or {}).get(name)

    def token_for(self, name: str) -> str:
        """An access token of identity `name`: from POST /identity/token with its API key when the
        info file lists one, else forged with the service's signing key (white-box)."""
        key = self.api_key_of(name)
        if key is None:
            return self.forge_token(sub=name, role=self.ROLES[name])
        response = requests.post(
            self.endpoint + "/identity/token",
            data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": key},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def client(self, name: str) -> IbmKeyProtectApiV2:
        """An SDK client acting as identity `name` (see `token_for`)."""
        key = self.api_key_of(name)
        if key is not None:
            authenticator = IAMAuthenticator(key, url=self.endpoint)
        else:
            authenticator = BearerTokenAuthenticator(self.forge_token(sub=name, role=self.ROLES[name]))
        service = IbmKeyProtectApiV2(authenticator=authenticator)
        service.set_service_url(self.endpoint)
        return service

    def iam_key(self) -> Optional[bytes]:
        """The service's token signing key (white-box: lets tests forge tokens of other identities
        and roles, which one dev API key cannot give)."""
        path = self.dir / "service" / "iam.key"
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data if len(data) == 32 else None

    def forge_token(self, *, sub="dev", role="Manager", instances=None, exp_in=3600, key=None) -> str:
        secret = key if key is not None else self.iam_key()
        if secret is None:
            pytest.skip("the service's iam.key is not readable; cannot forge tokens")
        now = int(time.time())
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        claims = {
            "iss": "rotor",
            "sub": sub,
            "iat": now - 10,
            "exp": now + exp_in,
            "role": role,
            "instances": instances if instances is not None else [self.instance],
        }
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
        return f"{header}.{payload}.{b64url(signature)}"


def _rotor_bin() -> Path:
    path = Path(os.environ.get("ROTOR_BIN", "target/debug/rotor"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


def _stop(process: subprocess.Popen) -> Optional[int]:
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None


@pytest.fixture(scope="session")
def rotor(tmp_path_factory) -> Rotor:
    binary = _rotor_bin()
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist: build it with 'cargo build -p rotor-cli' or set ROTOR_BIN")
    base = tmp_path_factory.mktemp("rotor-dev")
    state_dir = base / "dev"
    info_file = base / "info.json"
    stdout_path = base / "dev.stdout.log"
    stderr_path = base / "dev.stderr.log"
    env = dict(os.environ)
    env.setdefault("ROTOR_LOG", "debug")
    for name in ("ROTOR_HOME", "ROTOR_ENDPOINT", "ROTOR_API_KEY", "ROTOR_PASSWORD"):
        env.pop(name, None)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [
                str(binary), "dev",
                "--units", "2",
                "--recovery-units", "1",
                "--dir", str(state_dir),
                "--info-file", str(info_file),
                "--purge-after-seconds", "0",
                *shlex.split(os.environ.get("ROTOR_DEV_ARGS", "")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=str(base),
        )
    try:
        deadline = time.monotonic() + float(os.environ.get("ROTOR_START_TIMEOUT", "300"))
        info = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"rotor dev exited with {process.returncode}:\n{_tail(stderr_path)}")
            if info_file.exists():
                try:
                    info = json.loads(info_file.read_text())
                    break
                except (json.JSONDecodeError, OSError):
                    pass
            time.sleep(0.1)
        if info is None:
            pytest.fail(f"rotor dev did not write {info_file} in time:\n{_tail(stderr_path)}")
        mode = stat.S_IMODE(info_file.stat().st_mode)
        assert mode == 0o600, f"the info file has mode {oct(mode)}, not 0600"
        for name in ("endpoint", "instance", "api_key", "dir", "units", "ca_cert"):
            assert name in info, f"the info file lacks '{name}': {sorted(info)}"
        assert info["endpoint"].startswith("https://"), info["endpoint"]
        # Every client of the suite (IBM's SDK, requests) verifies the service's certificate
        # against the dev instance's own CA, as a deployment's clients would.
        os.environ["REQUESTS_CA_BUNDLE"] = info["ca_cert"]
        endpoint = info["endpoint"].rstrip("/")
        replicas = info.get("endpoints") or []
        proxy = None
        if len(replicas) > 1:
            # TLS passes through untouched: the replicas' certificate names the loopback
            # address, which the proxy shares.
            proxy = RoundRobinProxy([url.split("://", 1)[1] for url in replicas])
            endpoint = f"https://{proxy.address}"
        instance = Rotor(
            endpoint=endpoint,
            instance=str(info["instance"]),
            api_key=info["api_key"],
            dir=Path(info["dir"]),
            info=info,
            process=process,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
        )
    except BaseException:
        _stop(process)
        raise

    yield instance

    if proxy is not None:
        proxy.close()
    code = _stop(process)
    problems = []
    if code is None:
        problems.append("rotor dev did not exit within 30 s of SIGTERM and was killed")
    elif code != 0:
        problems.append(f"rotor dev exited with {code} after SIGTERM:\n{_tail(stderr_path)}")
    stderr_text = stderr_path.read_bytes().decode(errors="replace")
    if "panicked" in stderr_text:
        problems.append(f"rotor dev panicked:\n{_tail(stderr_path)}")
    for log in instance.unit_logs():
        if "panicked" in log.read_bytes().decode(errors="replace"):
            problems.append(f"a unit panicked: {log}:\n{_tail(log)}")
    # After shutdown the keystore may have been checkpointed: search everything once more.
    leaks = find_leaks(instance.secrets, instance.leak_files())
    problems += [f"secret leaked: {leak}" for leak in leaks]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def kp(rotor) -> IbmKeyProtectApiV2:
    """The SDK client; its IAM authenticator fetches tokens from rotor's POST /identity/token."""
    service = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(rotor.api_key, url=rotor.endpoint))
    service.set_service_url(rotor.endpoint)
    return service


@pytest.fixture(scope="session")
def instance(rotor) -> str:
    return rotor.instance


class Raw:
    """Plain `requests` calls with a valid token, for what the SDK cannot send."""

    def __init__(self, rotor: Rotor, kp: IbmKeyProtectApiV2) -> None:
        self.rotor = rotor
        self.kp = kp
        self.session = requests.Session()

    def token(self) -> str:
        return self.kp.authenticator.token_manager.get_token()

    def headers(self, token: Optional[str] = None, instance: Optional[str] = "default", **extra) -> dict:
        out = {"Authorization": f"Bearer {token if token is not None else self.token()}"}
        if instance == "default":
            instance = self.rotor.instance
        if instance is not None:
            out["Bluemix-Instance"] = instance
        out.update(extra)
        return out

    def request(self, method: str, path: str, *, token=None, instance="default", headers=None,
                data=None, json_body=None, params=None, timeout=60) -> requests.Response:
        all_headers = self.headers(token=token, instance=instance)
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        if headers:
            all_headers.update(headers)
        return self.session.request(method, self.rotor.endpoint + path, headers=all_headers, data=data,
                                    params=params, timeout=timeout)


@pytest.fixture(scope="session")
def raw(rotor, kp) -> Raw:
    return Raw(rotor, kp)
