"""`rotor console` in a real browser: headless Chromium (the system's, never a downloaded one)
driven by Playwright does the whole ceremony and a master key rotation by clicking, with a crypto
unit killed during the rotation and the rotation finished from the console's button.

A `rotor dev --imprint` instance of its own (2 operational units, 1 recovery unit, all in imprint
mode) and a fresh workstation: the signature keys and key parts are made with the command line
(as custodians make them on their own smart cards); everything else happens in the page.
Screenshots of every tab are saved under the test's tmp path (printed).

Environment: ROTOR_BIN (the rotor binary), ROTOR_CHROMIUM (default /usr/bin/chromium).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

from kphelpers import REPO_ROOT

PASSWORDS = {
    "signature key 1": "password-admin-one",
    "signature key 2": "password-admin-two",
    **{f"key part {n}": f"password-custodian-{n}" for n in range(1, 7)},
}
KEYS = 50_000
TIMEOUT_MS = 120_000
expect.set_options(timeout=TIMEOUT_MS)


def _rotor_bin() -> Path:
    path = Path(os.environ.get("ROTOR_BIN", "target/debug/rotor"))
    return path if path.is_absolute() else REPO_ROOT / path


def _chromium() -> str:
    path = os.environ.get("ROTOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(f"no Chromium at {path}: install the Debian package chromium (scripts/test.sh does)")
    return path


def _wait_for_file(path: Path, process: subprocess.Popen, what: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        if path.exists() and path.stat().st_size > 0:
            text = path.read_text()
            if text.strip():
                return text
        time.sleep(0.1)
    pytest.fail(f"{what} did not write {path} in time")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Dev:
    """A `rotor dev --imprint` instance and a workstation of its own."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.info_file = base / "info.json"
        self.home = base / "workstation"
        self.log = open(base / "dev.log", "wb")
        self.process = subprocess.Popen(
            [str(_rotor_bin()), "dev", "--units", "2", "--recovery-units", "1", "--imprint",
             "--dir", str(base / "dev"), "--info-file", str(self.info_file)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env=self._clean_env(), cwd=str(base),
        )
        self.info = json.loads(_wait_for_file(self.info_file, self.process, "rotor dev"))
        self.restarted: list[subprocess.Popen] = []

    @staticmethod
    def _clean_env() -> dict:
        env = dict(os.environ)
        for name in ("ROTOR_HOME", "ROTOR_ENDPOINT", "ROTOR_API_KEY", "ROTOR_PASSWORD", "ROTOR_CA_CERT",
                     "ROTOR_PIN", "ROTOR_ENROLLMENT_SECRET"):
            env.pop(name, None)
        return env

    def env(self, **extra) -> dict:
        env = self._clean_env()
        env.update(ROTOR_HOME=str(self.home), ROTOR_ENDPOINT=self.info["endpoint"],
                   ROTOR_CA_CERT=self.info["ca_cert"], ROTOR_API_KEY=self.info["api_key"], **extra)
        return env

    def cli(self, *args: str, password: str) -> str:
        done = subprocess.run([str(_rotor_bin()), *args], env=self.env(ROTOR_PASSWORD=password),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def unit_dir(self, index: int) -> Path:
        name = f"operational-{index}" if index < 2 else f"recovery-{index}"
        return Path(self.info["dir"]) / "units" / name

    def serve_info(self, index: int) -> dict:
        """What the unit's host shows its operator: the out-of-band fingerprint and secret."""
        return json.loads((self.unit_dir(index) / "serve.json").read_text())

    def kill_unit(self, index: int) -> None:
        directory = str(self.unit_dir(index))
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmdline and directory.encode() in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket_to(self.info["units"][index]["address"]):
                    pass
            except OSError:
                return
            time.sleep(0.05)
        pytest.fail("the killed unit still answers")

    def restart_unit(self, index: int) -> None:
        """Restarts a unit on its old address, as an operator would after a crash."""
        pki = Path(self.info["dir"]) / "pki"
        prefix = pki / f"unit-{self.unit_dir(index).name}"
        args = [str(_rotor_bin()), "unit", "serve", "--listen", self.info["units"][index]["address"],
                "--dir", str(self.unit_dir(index)),
                "--tls-cert", str(prefix.with_suffix(".pem")), "--tls-key", str(prefix.with_suffix(".key")),
                "--client-ca", str(pki / "ca.pem"), "--crl", str(pki / "crl.pem")]
        if index == 2:
            args.append("--recovery")
        env = self._clean_env()
        env["ROTOR_UNIT_PASSPHRASE"] = (Path(self.info["dir"]) / "units.passphrase").read_text()
        self.restarted.append(subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                               stdout=self.log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket_to(self.info["units"][index]["address"]):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("the restarted unit does not answer")

    def create_keys(self, count: int) -> None:
        """Root keys in bulk (the service's batch endpoint), so that reencryption takes a while."""
        endpoint = self.info["endpoint"]
        ca = self.info["ca_cert"]
        token = requests.post(endpoint + "/identity/token", verify=ca, timeout=30, data={
            "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": self.info["api_key"],
        }).json()["access_token"]
        for chunk in range(0, count, 5000):
            keys = [{"name": f"console-{n}", "dek": base64.b64encode(f"dek {n}".encode()).decode()}
                    for n in range(chunk, min(count, chunk + 5000))]
            response = requests.post(f"{endpoint}/v1/instances/{self.info['instance']}/keys/batch",
                                     headers={"Authorization": f"Bearer {token}"}, json={"keys": keys},
                                     verify=ca, timeout=300)
            assert response.status_code == 201, response.text

    def close(self) -> None:
        for process in self.restarted:
            process.kill()
            process.wait(timeout=10)
        _stop(self.process)
        self.log.close()


def socket_to(address: str):
    import socket
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=1)


class Console:
    """A `rotor console` process and its URL."""

    def __init__(self, dev: Dev, name: str) -> None:
        url_file = dev.base / f"{name}.url"
        self.log = open(dev.base / f"{name}.log", "wb")
        self.process = subprocess.Popen(
            [str(_rotor_bin()), "console", "--no-open", "--url-file", str(url_file)],
            env=dev.env(), stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.url = _wait_for_file(url_file, self.process, "rotor console", timeout=60).strip()
        self.origin = re.match(r"(http://[^/]+)", self.url).group(1)
        self.token = self.url.split("token=", 1)[1]

    def tab(self, name: str) -> str:
        return f"{self.origin}/{name}?token={self.token}"

    def close(self) -> None:
        _stop(self.process)
        self.log.close()


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    instance = Dev(tmp_path_factory.mktemp("console"))
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


def act(page: Page, button, passwords: dict[str, str] | None = None) -> None:
    """Clicks an action button, checks the dialog says what it will do, types the passwords it
    asks for (by the prompt's words) and confirms; waits for the page to show the result."""
    button.click()
    dialog = page.locator("#dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#dialog-plan")).not_to_be_empty()
    for field in page.locator("#dialog-secrets input").all():
        prompt = field.get_attribute("data-prompt")
        matches = [value for words, value in (passwords or PASSWORDS).items() if words in prompt]
        assert matches, f"the page asks for a secret the test does not know: {prompt}"
        field.fill(matches[0])
    with page.expect_navigation(timeout=TIMEOUT_MS):
        page.locator("#dialog-ok").click()


def messages(page: Page) -> str:
    return page.locator("#messages").inner_text()


def test_requests_without_the_token_or_from_another_origin_are_refused(dev):
    console = Console(dev, "guard-console")
    try:
        assert requests.get(console.tab("units").split("?")[0], timeout=30).status_code == 403
        assert requests.get(f"{console.origin}/units?token={'0' * 64}", timeout=30).status_code == 403
        assert requests.get(f"{console.origin}/progress", timeout=30).status_code == 403
        assert requests.get(console.tab("units"), timeout=30).status_code == 200
        body = {"action": {"kind": "select", "units": [1]}}
        cross = requests.post(f"{console.origin}/run?token={console.token}", json=body, timeout=30,
                              headers={"Origin": "http://attacker.example"})
        assert cross.status_code == 403, cross.text
        assert "Access-Control-Allow-Origin" not in cross.headers
        no_origin = requests.post(f"{console.origin}/run?token={console.token}", json=body, timeout=30)
        assert no_origin.status_code == 403
        rebound = requests.get(console.tab("units"), timeout=30, headers={"Host": "rebound.example"})
        assert rebound.status_code == 403
        # Nothing was selected by the refused requests.
        settings = dev.home / "settings.json"
        assert not settings.exists() or not json.loads(settings.read_text()).get("selected_units")
    finally:
        console.close()


def test_ceremony_and_rotation_by_clicking_with_a_unit_killed(dev, shots, capsys):
    with capsys.disabled():
        print(f"\nconsole screenshots: {shots}")
    for number, name in ((1, "admin-one"), (2, "admin-two")):
        dev.cli("sigkeys", "new", "--name", name, password=PASSWORDS[f"signature key {number}"])
    for number in range(1, 7):
        dev.cli("parts", "new", "--description", f"custodian {number}", password=PASSWORDS[f"key part {number}"])
    console = Console(dev, "console")
    consoles = [console]
    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(console.url)

            # Crypto units: enroll each unit with the fingerprint its host shows, then select all.
            for index in range(3):
                number = index + 1
                page.locator(f"#fingerprint-{number}").fill(dev.serve_info(index)["fingerprint"])
                act(page, page.locator(f"#fingerprint-{number}").locator("xpath=../..").get_by_role("button", name="Enroll"))
                assert f"Enrolled crypto unit {number}" in messages(page)
            for number in (1, 2, 3):
                page.locator(f"#unit-{number}").check()
            act(page, page.get_by_role("button", name="Select", exact=True))
            assert "Selected crypto units: 1, 2, 3" in messages(page)
            expect(page.locator("#compare-result")).to_have_text(
                "All selected crypto units have the same configuration.")

            # Administrators: both signature keys sign and are installed, with the units'
            # enrollment secrets for the first admin.
            page.locator("#tab-admins").click()
            for number in (1, 2):
                page.locator(f"#sigkey-{number}").check()
            act(page, page.get_by_role("button", name="Use to sign"))
            for number in (1, 2):
                page.locator(f"#sigkey-{number}").check()
            secrets = ",".join(dev.serve_info(index)["enrollment_secret"] for index in range(3))
            page.locator("#enrollment").fill(secrets)
            act(page, page.get_by_role("button", name="Add administrators"))
            assert "admin 'admin-two' installed" in messages(page), messages(page)
            expect(page.locator("main table").nth(1)).to_contain_text("admin-one")

            # Signature thresholds 2/2: the units leave imprint mode.
            page.locator("#tab-thresholds").click()
            page.locator("#signature").fill("2")
            page.locator("#revocation").fill("2")
            act(page, page.get_by_role("button", name="Set thresholds"))
            expect(page.locator("main table")).not_to_contain_text("imprint")

            # Master keys: Load three parts, Commit, Set immediate.
            page.locator("#tab-master-keys").click()
            for number in (1, 2, 3):
                page.locator(f"#part-{number}").check()
            act(page, page.get_by_role("button", name="Load"))
            expect(page.locator("main table").first).to_contain_text("Full Uncommitted")
            act(page, page.get_by_role("button", name="Commit"))
            expect(page.locator("main table").first).to_contain_text("Full Committed")
            page.get_by_role("button", name="Set immediate").click()
            expect(page.locator("#dialog-warning")).to_contain_text("does not reencrypt")
            page.locator("#dialog-cancel").click()
            assert "Cancelled; nothing was changed." in messages(page)
            act(page, page.get_by_role("button", name="Set immediate"))
            expect(page.locator("main table").first).to_contain_text("Valid")
            first_vp = page.locator("main table").first.locator("tr").nth(2).locator("td").nth(3).inner_text()

            # Keys to rewrap, then the rotation to the master key of parts 4, 5 and 6.
            dev.create_keys(KEYS)
            for number in (4, 5, 6):
                page.locator(f"#part-{number}").check()
            act(page, page.get_by_role("button", name="Load"))
            act(page, page.get_by_role("button", name="Commit"))
            new_vp = page.locator("main table").first.locator("tr").nth(1).locator("td").nth(3).inner_text()
            assert new_vp != first_vp

            for name in ("units", "admins", "thresholds", "master-keys", "key-storage", "audit"):
                page.goto(console.tab(name))
                page.screenshot(path=str(shots / f"before-rotation-{name}.png"), full_page=True)
            page.goto(console.tab("master-keys"))

            page.get_by_role("button", name="Rotate").click()
            expect(page.locator("#dialog")).to_be_visible()
            for field in page.locator("#dialog-secrets input").all():
                prompt = field.get_attribute("data-prompt")
                field.fill(next(v for k, v in PASSWORDS.items() if k in prompt))
            page.locator("#dialog-ok").click()
            expect(page.locator("#messages")).to_contain_text("Master key rotation started.")
            # The recovery unit dies during the rotation: it is the last to be promoted, after
            # every key is rewrapped, so the rotation cannot have finished without it.
            dev.kill_unit(2)
            expect(page.locator("#rotation-progress")).to_be_visible()
            page.screenshot(path=str(shots / "rotation-running.png"), full_page=True)
            stuck = page.locator("#rotation-interrupted").or_(page.locator("#rotation-numbers", has_text="waiting"))
            expect(stuck).to_be_visible()
            if page.locator("#rotation-interrupted").is_visible():
                print("the rotation stopped at the killed unit")
            else:
                # The service rewrapped key storage and waits for the unit, and so does the
                # console, showing why; then the workstation goes down too, and a new console
                # takes over.
                print("the service waits for the killed unit; the console is killed as well")
                expect(page.locator("#rotation-numbers")).to_contain_text(f"{KEYS} of {KEYS} keys rewrapped")
                page.screenshot(path=str(shots / "rotation-waiting.png"), full_page=True)
                console.process.kill()
                console.process.wait(timeout=10)
                console = Console(dev, "console-2")
                consoles.append(console)
            dev.restart_unit(2)
            page.goto(console.tab("master-keys"))
            finish = page.get_by_role("button", name="Finish rotation")
            expect(finish).to_be_visible()
            page.screenshot(path=str(shots / "rotation-interrupted.png"), full_page=True)
            finish.click()
            expect(page.locator("#dialog")).to_be_visible()
            for field in page.locator("#dialog-secrets input").all():
                prompt = field.get_attribute("data-prompt")
                field.fill(next(v for k, v in PASSWORDS.items() if k in prompt))
            with page.expect_navigation(timeout=TIMEOUT_MS):
                page.locator("#dialog-ok").click()
            page.wait_for_load_state()
            log = messages(page)
            assert "Master key rotation successful." in log, log
            if len(consoles) == 1:
                assert "KMS CRK rewrap successful." in log, log
            expect(page.locator("#rotation-interrupted")).to_have_count(0)
            registers = page.locator("main table").first
            expect(registers).not_to_contain_text("Full Committed")
            currents = [registers.locator("tr").nth(row).locator("td").nth(3).inner_text() for row in (2, 4, 6)]
            assert currents == [new_vp] * 3, currents

            page.goto(console.tab("key-storage"))
            storage = page.locator("main table")
            expect(storage).to_contain_text(new_vp)
            expect(storage).to_contain_text("current register")
            expect(storage).not_to_contain_text(first_vp)

            for name in ("units", "admins", "thresholds", "master-keys", "key-storage", "audit"):
                page.goto(console.tab(name))
                expect(page.locator("#tab-error")).to_have_count(0)
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            act(page, page.get_by_role("button", name="Verify"))
            assert "intact" in messages(page), messages(page)
        finally:
            browser.close()
            for each in consoles:
                each.close()
