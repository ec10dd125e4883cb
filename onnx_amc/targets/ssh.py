"""``--target ssh://user@host[:port][?python=PATH]``: measure candidates on a remote device.

The device needs Python 3 with numpy and onnxruntime, not onnx-amc: each call runs the
system ``ssh`` client once, starts the remote ``python3`` with a one-line bootstrap that
reads :mod:`onnx_amc.targets.remote_bench`'s source from stdin, and then streams the whole
batch of candidate models after it.  One round trip per batch amortizes the SSH handshake
(~0.1-1 s) over many candidates.

Why the system client and not paramiko: it already honours everything a user has set up
for that host (``~/.ssh/config`` aliases, ``ProxyJump``, agent, hardware keys,
``known_hosts`` policy) and adds no dependency.  It runs with ``BatchMode=yes`` so it never
prompts: keys come from the agent or the config, passwords are never accepted (a URL with
one is refused), and host-key checking follows the user's ``StrictHostKeyChecking``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from onnx_amc.errors import InputError
from onnx_amc.latency import LatencyStats
from onnx_amc.targets import remote_bench

__all__ = ["SshTarget"]

# Reads remote_bench's source (length line + bytes) from stdin and runs it as __main__; the
# rest of stdin is then the batch.  Kept tiny because it travels on the command line.
_BOOTSTRAP = (
    "import sys;b=sys.stdin.buffer;"
    "exec(compile(b.read(int(b.readline())),'remote_bench.py','exec'))"
)
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:%-]+$")
_SSH_FAILED = 255  # ssh's own exit status for connection and authentication failures
_NOT_FOUND = 127  # the remote shell's "command not found"
_URL_KEYS = {"python"}


@dataclass(frozen=True)
class SshTarget:
    """A remote device reached with the system ``ssh`` client.

    Attributes:
        host: host name, address, or an alias from the ssh config.
        user: login name (``None``: the ssh config's or the local user's).
        port: ``None``: the ssh config's or 22.
        python: the remote interpreter (``?python=`` in the URL), default ``python3``.
        ssh_options: extra ``ssh`` arguments, e.g. ``("-o", "UserKnownHostsFile=...")``.
        config_file: passed as ``ssh -F`` (tests use it to ignore the user's config).
        connect_timeout_s: ``ConnectTimeout``: how long an unreachable host may take to fail.
    """

    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"
    ssh_options: tuple[str, ...] = ()
    config_file: str | None = None
    connect_timeout_s: int = 10

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        ssh_options: Sequence[str] = (),
        config_file: str | Path | None = None,
        connect_timeout_s: int = 10,
    ) -> SshTarget:
        """Parse ``ssh://[user@]host[:port][?python=PATH]`` (IPv6 hosts in brackets).

        Raises:
            InputError: not an ``ssh://`` URL, a password in it, a path or unknown query
                key, a bad port or host.
        """
        shown = url.split("@", 1)[-1] if "@" in url else url  # never echo a password
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InputError(f"target 'ssh://...{shown}': {exc}") from None
        if parts.scheme != "ssh":
            raise InputError(f"target '{url}' is not an ssh:// URL (ssh://user@host[:port])")
        if parts.password is not None:
            raise InputError(
                f"target ssh://...@{shown}: passwords are not accepted in the URL; "
                "use a key from ssh-agent or ~/.ssh/config"
            )
        host = parts.hostname or ""
        if not host or not _HOST_RE.match(host) or host.startswith("-"):
            raise InputError(f"target '{url}': missing or invalid host name")
        if parts.path not in ("", "/") or parts.fragment:
            raise InputError(f"target '{url}': unexpected path; use ssh://user@host[:port]")
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise InputError(f"target '{url}': malformed query '{parts.query}'") from None
        unknown = sorted(set(query) - _URL_KEYS)
        if unknown or any(len(v) != 1 or not v[0] for v in query.values()):
            raise InputError(
                f"target '{url}': query may only set python=PATH once (got {parts.query!r})"
            )
        user = unquote(parts.username) if parts.username else None
        if user is not None and (
            not user or user.startswith("-") or any(c.isspace() for c in user)
        ):
            raise InputError(f"target '{url}': invalid user name")
        return cls(
            host=host,
            user=user,
            port=port,
            python=query.get("python", ["python3"])[0],
            ssh_options=tuple(ssh_options),
            config_file=str(config_file) if config_file is not None else None,
            connect_timeout_s=int(connect_timeout_s),
        )

    @property
    def url(self) -> str:
        """The target as a URL, for messages and reports."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        query = f"?python={self.python}" if self.python != "python3" else ""
        return f"ssh://{user}{host}{port}{query}"

    def ssh_command(self, remote_command: str) -> list[str]:
        """The local ``ssh`` argv running ``remote_command`` (a shell string) on the device."""
        argv = [
            "ssh",
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout_s}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]
        if self.config_file:
            argv += ["-F", self.config_file]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        argv += list(self.ssh_options)
        argv += ["--", self.host, remote_command]
        return argv

    def _python_command(self) -> str:
        py = self.python
        # Keep a leading ~/ expandable by the remote shell; quote everything else.
        quoted = "~/" + shlex.quote(py[2:]) if py.startswith("~/") else shlex.quote(py)
        return f"{quoted} -c {shlex.quote(_BOOTSTRAP)}"

    def check(self) -> dict[str, Any]:
        """Connect once and return the device's info (cpu, cores, versions, providers).

        Raises:
            InputError: unreachable host, failed authentication, no such python, missing
                numpy/onnxruntime on the device (one line each).
        """
        info, _ = self.measure_batch([])
        return info

    def measure_many(self, models: Sequence[bytes], **settings: Any) -> list[LatencyStats]:
        """Latency of each model on the device, in order, in one SSH round trip
        (:meth:`measure_batch` without the device header; the same keyword arguments)."""
        return self.measure_batch(models, **settings)[1]

    def measure_batch(
        self,
        models: Sequence[bytes],
        *,
        threads: int = 1,
        providers: Sequence[str] | str | None = None,
        rel_ci: float = remote_bench.REL_CI,
        time_cap_s: float = remote_bench.TIME_CAP_S,
        warmup: int = remote_bench.WARMUP,
        min_runs: int = remote_bench.MIN_RUNS,
        min_time_s: float = remote_bench.MIN_TIME_S,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> tuple[dict[str, Any], list[LatencyStats]]:
        """The device info header and the latency of each model, in order, in one SSH round
        trip.

        Models are measured one after another with the method of
        :func:`onnx_amc.latency.measure`; ``providers`` are validated by the device
        against its own onnxruntime build. ``input_shapes`` gives the shapes to time dynamic
        inputs at (the device has no calibration data; without them a symbolic spatial axis
        is an error there).

        Raises:
            InputError: as :meth:`check`, plus an unavailable provider or a candidate the
                device cannot load or run.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        settings = {
            "threads": int(threads),
            "providers": list(providers) if providers else None,
            "warmup": int(warmup),
            "min_runs": int(min_runs),
            "rel_ci": float(rel_ci),
            "time_cap_s": float(time_cap_s),
            "min_time_s": float(min_time_s),
            "input_shapes": (
                {k: [int(d) for d in v] for k, v in input_shapes.items()} if input_shapes else None
            ),
        }
        source = Path(remote_bench.__file__).read_bytes()
        payload = (
            str(len(source)).encode() + b"\n" + source + remote_bench.encode_batch(settings, models)
        )
        # Generous: the remote honours time_cap_s per model; sessions and transfer add a bit.
        timeout = self.connect_timeout_s + 30.0 + len(models) * (float(time_cap_s) * 1.5 + 30.0)
        argv = self.ssh_command(self._python_command())
        try:
            proc = subprocess.run(argv, input=payload, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise InputError(f"target {self.url}: no 'ssh' client on this machine") from None
        except subprocess.TimeoutExpired:
            raise InputError(
                f"target {self.url}: no answer within {timeout:.0f} s measuring {len(models)} models"
            ) from None
        return _parse_reply(self, proc.returncode, proc.stdout, proc.stderr, len(models))


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    # ssh prints a 'Warning: Permanently added ...' first on new hosts; the cause comes last.
    return lines[-1] if lines else ""


def _ssh_failure(target: SshTarget, stderr: bytes) -> InputError:
    """One line for ssh's own failures (exit 255), naming the likely fix."""
    text = stderr.decode("utf-8", "replace")
    last = _last_line(stderr)
    if "Permission denied" in text or "Too many authentication failures" in text:
        why = (
            "authentication failed (keys only, BatchMode): add the key to ssh-agent or set "
            "IdentityFile in ~/.ssh/config"
        )
    elif "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION" in text:
        why = "host key not trusted: check it and add it to known_hosts (connect once with ssh)"
    elif any(
        s in text
        for s in (
            "Connection refused",
            "timed out",
            "Could not resolve",
            "No route to host",
            "Network is unreachable",
            "Connection closed",
            "Connection reset",
        )
    ):
        why = "host unreachable"
    else:
        why = "ssh failed"
    return InputError(f"target {target.url}: {why} ({last or 'exit 255, no message'})")


def _parse_reply(
    target: SshTarget, rc: int, stdout: bytes, stderr: bytes, count: int
) -> tuple[dict[str, Any], list[LatencyStats]]:
    """Device info and stats from the remote JSON lines, or one InputError line."""
    messages = []
    for raw in stdout.decode("utf-8", "replace").splitlines():
        raw = raw.strip()
        if not raw.startswith("{"):
            continue  # e.g. a login banner printed by a shell rc file
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("onnx_amc_bench") == remote_bench.PROTOCOL:
            messages.append(msg)
    fatal = next((m for m in messages if m.get("type") == "fatal"), None)
    if fatal is not None:
        missing = fatal.get("missing")
        if missing:
            raise InputError(
                f"target {target.url}: {fatal.get('message')}; "
                f"install with: {target.python} -m pip install {' '.join(missing)}"
            )
        raise InputError(f"target {target.url}: {fatal.get('message')}")
    if not messages:
        if rc == _SSH_FAILED:
            raise _ssh_failure(target, stderr)
        if rc == _NOT_FOUND:
            raise InputError(
                f"target {target.url}: no '{target.python}' on the device "
                f"({_last_line(stderr) or 'command not found'}); set ?python=/path/to/python3"
            )
        raise InputError(
            f"target {target.url}: the remote benchmark did not start (exit {rc}: "
            f"{_last_line(stderr) or 'no message'}); it needs Python 3.8+"
        )
    header = messages[0]
    if header.get("type") != "device":
        raise InputError(f"target {target.url}: unexpected first reply {header.get('type')!r}")
    for m in messages:
        if m.get("type") == "error":
            raise InputError(
                f"target {target.url}: candidate {m.get('index')} failed on the device: "
                f"{m.get('message')}"
            )
    results = {int(m["index"]): m for m in messages if m.get("type") == "result"}
    if messages[-1].get("type") != "done" or sorted(results) != list(range(count)):
        raise InputError(
            f"target {target.url}: the remote benchmark stopped early after {len(results)} of "
            f"{count} models (exit {rc}: {_last_line(stderr) or 'no message'})"
        )
    fields = LatencyStats.__dataclass_fields__
    stats = [LatencyStats(**{k: results[i][k] for k in fields}) for i in range(count)]
    info = {k: v for k, v in header.items() if k not in ("onnx_amc_bench", "type")}
    return info, stats
