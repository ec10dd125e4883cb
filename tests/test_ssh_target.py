"""``--target ssh://``: the remote benchmark against a real sshd on localhost (no mocks).

The fixture starts Debian's ``/usr/sbin/sshd`` on a free port with a host key, a client key
and a client config of its own (tests never read the user's ~/.ssh), and the "remote"
python is this venv's interpreter, so the whole path (ssh client, remote shell, bootstrap,
framing, measurement, JSON) runs for real.  Without ``/usr/sbin/sshd`` those tests skip;
the URL and protocol tests run everywhere.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onnx_amc.errors import InputError
from onnx_amc.latency import measure
from onnx_amc.targets import host, remote_bench
from onnx_amc.targets.ssh import SshTarget
from tests.test_data import make_classifier

SSHD = Path("/usr/sbin/sshd")
FAST = {"warmup": 2, "min_runs": 10, "rel_ci": 0.05, "time_cap_s": 2.0, "min_time_s": 0.1}


# ---------------------------------------------------------------------------------------------
# URL parsing (no sshd needed)
# ---------------------------------------------------------------------------------------------


def test_parse_url_forms() -> None:
    t = SshTarget.parse("ssh://pi@raspberry.local:2222")
    assert (t.user, t.host, t.port, t.python) == ("pi", "raspberry.local", 2222, "python3")
    t = SshTarget.parse("ssh://graviton")
    assert (t.user, t.host, t.port) == (None, "graviton", None)
    t = SshTarget.parse("ssh://me@[::1]:22?python=/opt/py/bin/python3")
    assert (t.host, t.port, t.python) == ("::1", 22, "/opt/py/bin/python3")
    assert t.url == "ssh://me@[::1]:22?python=/opt/py/bin/python3"
    argv = SshTarget.parse("ssh://u@h:7").ssh_command("true")
    assert "BatchMode=yes" in argv and argv[-3:] == ["--", "h", "true"]
    assert argv[argv.index("-p") + 1] == "7" and argv[argv.index("-l") + 1] == "u"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://host", "not an ssh:// URL"),
        ("ssh://u:secret@host", "passwords are not accepted"),
        ("ssh://host:99999", "out of range"),
        ("ssh://host:abc", "ssh://"),
        ("ssh://", "invalid host"),
        ("ssh://-oProxyCommand=x", "invalid host"),
        ("ssh://host/some/path", "unexpected path"),
        ("ssh://host?foo=1", "query may only set python"),
        ("ssh://host?python=", "query may only set python"),
    ],
)
def test_parse_url_rejects(url: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        SshTarget.parse(url)
    assert "secret" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# The remote script in-process (framing, protocol)
# ---------------------------------------------------------------------------------------------


def _run_main(payload: bytes) -> tuple[int, list[dict]]:
    out = io.StringIO()
    rc = remote_bench.main(io.BytesIO(payload), out)
    return rc, [json.loads(line) for line in out.getvalue().splitlines()]


def test_remote_main_protocol_in_process() -> None:
    models = [make_classifier(batch=1, hw=8).SerializeToString(), b"not a model"]
    rc, msgs = _run_main(remote_bench.encode_batch(dict(FAST, time_cap_s=1.0), models))
    assert rc == 0
    assert [m["type"] for m in msgs] == ["device", "result", "error", "done"]
    assert msgs[0]["used_providers"] == ["CPUExecutionProvider"]
    assert msgs[1]["index"] == 0 and msgs[1]["runs"] >= 10 and msgs[1]["median_ms"] > 0
    assert msgs[2]["index"] == 1
    # A batch cut short is a fatal line, not a hang or a traceback.
    rc, msgs = _run_main(remote_bench.encode_batch(FAST, models)[:-5])
    assert rc == remote_bench.FATAL_EXIT and msgs[-1]["type"] == "fatal"
    rc, msgs = _run_main(remote_bench.encode_batch(dict(FAST, bogus=1), []))
    assert rc == remote_bench.FATAL_EXIT and "unknown settings" in msgs[0]["message"]


def _dynamic_hw_classifier() -> bytes:
    """The test classifier with symbolic H and W (as many detectors and OCR models ship)."""
    m = make_classifier(batch="N", hw=8)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    return m.SerializeToString()


def test_remote_times_dynamic_inputs_at_the_pinned_shapes() -> None:
    model = _dynamic_hw_classifier()
    rc, msgs = _run_main(remote_bench.encode_batch(FAST, [model]))
    assert rc == 0 and msgs[1]["type"] == "error" and "dynamic dimension 2" in msgs[1]["message"]
    small, big = (dict(FAST, input_shapes={"x": [1, 3, hw, hw]}) for hw in (8, 128))
    (_, r_small, _), (_, r_big, _) = (_run_main(remote_bench.encode_batch(s, [model]))[1][:3]
                                      for s in (small, big))
    assert r_small["type"] == r_big["type"] == "result"
    assert r_big["median_ms"] > 2 * r_small["median_ms"]  # 256x the pixels
    # A pinned shape that contradicts a static dim is refused, not silently used.
    rc, msgs = _run_main(remote_bench.encode_batch(
        dict(FAST, input_shapes={"x": [1, 4, 8, 8]}), [model]))
    assert msgs[1]["type"] == "error" and "not the pinned" in msgs[1]["message"]
    rc, msgs = _run_main(remote_bench.encode_batch(dict(FAST, input_shapes={"x": [1, -3]}), []))
    assert rc == remote_bench.FATAL_EXIT and "input_shapes" in msgs[0]["message"]
    # The host target takes the same argument and gives the same kind of number.
    (local,) = host.HostTarget().measure_many([model], input_shapes={"x": (1, 3, 128, 128)},
                                              **FAST)
    assert 1 / 3 < local.median_ms / r_big["median_ms"] < 3


# ---------------------------------------------------------------------------------------------
# A real sshd on localhost
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    client_config: Path
    log: Path
    tmp: Path

    def target(self, python: str = sys.executable, **kw: object) -> SshTarget:
        url = f"ssh://{self.user}@127.0.0.1:{self.port}?python={python}"
        return SshTarget.parse(url, config_file=self.client_config, **kw)  # type: ignore[arg-type]

    def logins(self) -> int:
        return self.log.read_text(errors="replace").count("Accepted publickey")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "onnx-amc-test", "-f", str(path)],
        check=True,
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not SSHD.exists():
        pytest.skip("/usr/sbin/sshd is absent (apt-get install openssh-server)")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("the ssh client or ssh-keygen is absent")
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    except OSError as exc:
        pytest.skip(f"cannot create /run/sshd for sshd: {exc}")
    tmp = tmp_path_factory.mktemp("sshd")
    _keygen(tmp / "host_key")
    _keygen(tmp / "client_key")
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    port = _free_port()
    user = getpass.getuser()
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile {tmp / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"AllowUsers {user}\n"
    )
    host_pub = (tmp / "host_key.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    client_config = tmp / "ssh_config"
    client_config.write_text(
        "Host *\n"
        f"  IdentityFile {tmp / 'client_key'}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
        f"  UserKnownHostsFile {tmp / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
    )
    log = tmp / "sshd.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(tmp / "sshd_config")],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited ({proc.returncode}): {log.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"sshd did not listen on {port}: {log.read_text()[-500:]}")
                time.sleep(0.1)
        yield Sshd(port, user, client_config, log, tmp)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_batched_measurement_in_one_connection(sshd: Sshd) -> None:
    models = [make_classifier(batch=1, hw=hw).SerializeToString() for hw in (8, 48, 128)]
    before = sshd.logins()
    info, stats = sshd.target().measure_batch(models, **FAST)
    assert sshd.logins() - before == 1  # one round trip for the whole batch
    assert len(stats) == 3
    for s in stats:
        assert s.runs >= 10 and s.threads == 1 and s.iqr_ms >= 0
        assert 0 < s.median_ms < 1000
    # 256x the pixels of the smallest: the device must see the difference.
    assert stats[2].median_ms > 2 * stats[0].median_ms
    # Same machine, same method: the remote number agrees with a local one within noise.
    local = measure(models[2], threads=1, **FAST)
    assert 1 / 3 < stats[2].median_ms / local.median_ms < 3
    # The device header has the host's keys, so reports can show either the same way.
    assert set(info) == set(host.device_info())
    assert info["onnxruntime"] == host.device_info()["onnxruntime"]
    assert info["used_providers"] == ["CPUExecutionProvider"]


def test_dynamic_input_model_is_timed_at_the_pinned_shape_over_ssh(sshd: Sshd) -> None:
    model = _dynamic_hw_classifier()
    with pytest.raises(InputError, match="dynamic dimension"):
        sshd.target().measure_many([model], **FAST)
    (stats,) = sshd.target().measure_many([model], input_shapes={"x": (1, 3, 48, 48)}, **FAST)
    assert stats.runs >= 10 and stats.median_ms > 0


def test_check_returns_device_info(sshd: Sshd) -> None:
    info = sshd.target().check()
    assert "CPUExecutionProvider" in info["providers"]
    assert info["cores"] == os.cpu_count() and info["python"]


def test_unreachable_port_fails_fast_in_one_line(sshd: Sshd) -> None:
    target = SshTarget.parse(
        f"ssh://{sshd.user}@127.0.0.1:{_free_port()}",
        config_file=sshd.client_config,
        connect_timeout_s=5,
    )
    t0 = time.monotonic()
    with pytest.raises(InputError, match="host unreachable") as info:
        target.check()
    assert time.monotonic() - t0 < 5
    assert "\n" not in str(info.value) and "Connection refused" in str(info.value)


def test_wrong_key_is_an_auth_failure(sshd: Sshd, tmp_path: Path) -> None:
    _keygen(tmp_path / "other_key")
    # IdentityFile adds to a list, so the wrong key needs a config without the right one.
    config = tmp_path / "ssh_config"
    config.write_text(
        sshd.client_config.read_text().replace(
            str(sshd.tmp / "client_key"), str(tmp_path / "other_key")
        )
    )
    target = SshTarget.parse(f"ssh://{sshd.user}@127.0.0.1:{sshd.port}", config_file=config)
    with pytest.raises(InputError, match="authentication failed") as info:
        target.check()
    assert "Permission denied" in str(info.value) and "\n" not in str(info.value)


def test_remote_without_onnxruntime(sshd: Sshd, tmp_path: Path) -> None:
    # This venv's python with onnxruntime shadowed by a module whose import fails.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "onnxruntime.py").write_text("raise ImportError('No module named onnxruntime')\n")
    wrapper = tmp_path / "python-no-ort"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={blocker} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    with pytest.raises(InputError, match=r"onnxruntime is missing") as info:
        sshd.target(python=str(wrapper)).measure_many([b"x"], **FAST)
    assert "pip install onnxruntime" in str(info.value) and "\n" not in str(info.value)


def test_system_python_without_packages(sshd: Sshd) -> None:
    system = Path("/usr/bin/python3")
    if not system.exists():
        pytest.skip("no /usr/bin/python3")
    has_ort = subprocess.run([str(system), "-c", "import onnxruntime"], capture_output=True)
    if has_ort.returncode == 0:
        pytest.skip("/usr/bin/python3 has onnxruntime")
    with pytest.raises(InputError, match="onnxruntime"):
        sshd.target(python=str(system)).check()


def test_no_such_python(sshd: Sshd) -> None:
    with pytest.raises(InputError, match="no '/nonexistent/python3' on the device"):
        sshd.target(python="/nonexistent/python3").check()


def test_remote_rejects_unavailable_provider_and_bad_candidate(sshd: Sshd) -> None:
    with pytest.raises(InputError, match="'NoSuchEP' is not available.*CPUExecutionProvider"):
        sshd.target().measure_many([b"x"], providers=["NoSuchEP"], **FAST)
    good = make_classifier(batch=1).SerializeToString()
    with pytest.raises(InputError, match="candidate 1 failed on the device"):
        sshd.target().measure_many([good, b"not a model"], **FAST)
