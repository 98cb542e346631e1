"""A real Flower federation on this machine: one SuperLink and N SuperNodes as subprocesses on
127.0.0.1 (free ports), insecure or with TLS certificates made on the spot. For tests and trials.

    with LocalNet(tmp, nodes=3, tls=True) as net:
        net.run(APP_DIR, {"config-json": "..."}, timeout=120)   # `flwr run APP CONNECTION --stream`
        net.kill_node(2)                                         # SIGKILL: a node that dies

Every process is started in its own session and torn down (SIGTERM, then SIGKILL) with its
children; nothing listens anywhere but 127.0.0.1. Flower's telemetry, update check and runtime
dependency installation are off, so nothing tries to reach the network.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def offline_env(flwr_home: Path) -> dict[str, str]:
    """The environment for Flower's processes: its home under ``flwr_home``, no telemetry, no update check."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class TlsFiles:
    """PEM files: a CA, and a server certificate it signed for 127.0.0.1 and localhost."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_certs(directory: Path, days: int = 2) -> TlsFiles:
    """A throw-away CA and a server certificate (SANs 127.0.0.1, localhost), written under ``directory``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    later = now + _dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flarebench test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return files


class LocalNet:
    """A SuperLink and ``nodes`` SuperNodes on 127.0.0.1; SuperNode i gets ``partition-id=i num-partitions=nodes``.

    ``tls``: the SuperLink serves TLS with a certificate from a CA made here; SuperNodes and ``flwr run``
    verify it with that CA (``--root-certificates`` / ``root-certificates``).
    """

    CONNECTION = "flarebench-localnet"

    def __init__(self, workdir: str | Path, nodes: int = 3, tls: bool = False, start_timeout: float = 60.0):
        self.dir = Path(workdir)
        self.nodes, self.tls, self.start_timeout = nodes, tls, start_timeout
        self.home = self.dir / "flwr-home"
        self.env = offline_env(self.home)
        self.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"  # start App processes within 0.2 s (default 1 s)
        self.port = free_port()
        self.certs: TlsFiles | None = None
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen | None] = []
        self._logs: list = []

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> "LocalNet":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start the SuperLink, wait until it listens, start the SuperNodes, write the ``flwr`` connection."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.certs = make_tls_certs(self.dir / "certs")
        link = ["flower-superlink", "--host", HOST, "--port", str(self.port), "--disable-runtime-dependency-installation"]
        link += self._server_tls_args()
        self.superlink = self._spawn(link, "superlink")
        self._wait_listening(self.port, self.superlink)
        self.supernodes = [self._start_node(i) for i in range(self.nodes)]
        self._write_connection()

    def _start_node(self, i: int) -> subprocess.Popen:
        cmd = ["flower-supernode", "--superlink", f"{HOST}:{self.port}", "--port", str(free_port()),
               "--node-config", f"partition-id={i} num-partitions={self.nodes}"]
        cmd += ["--root-certificates", str(self.certs.ca_cert)] if self.certs else ["--insecure"]
        return self._spawn(cmd, f"supernode{i}")

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its children, as a machine that dies would."""
        proc = self.supernodes[i]
        if proc is not None:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
            self.supernodes[i] = None

    def stop(self) -> None:
        """Stop every process this net started (SIGTERM, 10 s, then SIGKILL), with their children."""
        procs = [p for p in [*self.supernodes, self.superlink] if p is not None]
        for p in procs:
            _kill_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(p, signal.SIGKILL)  # the group: children outlive a parent that exited on SIGTERM
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.supernodes, self.superlink = [], None
        for f in self._logs:
            f.close()
        self._logs = []

    # ---------------------------------------------------------------- running an app
    def run(self, app_dir: str | Path, run_config: dict | None = None, timeout: float = 300.0) -> subprocess.CompletedProcess:
        """``flwr run APP_DIR CONNECTION --run-config ... --stream``: submit the app and wait until its run ends.

        Returns the finished process (stdout+stderr in ``.stdout``); TimeoutExpired after ``timeout`` seconds.
        """
        cmd = ["flwr", "run", str(app_dir), self.CONNECTION, "--stream"]
        if run_config:
            cmd += ["--run-config", " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())]
        return subprocess.run(cmd, env=self.env, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, start_new_session=True)

    def log(self, name: str) -> str:
        """The output so far of process ``name`` (``superlink``, ``supernode0``, ...)."""
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---------------------------------------------------------------- helpers
    def _server_tls_args(self) -> list[str]:
        if not self.certs:
            return ["--insecure"]
        return ["--ssl-ca-certfile", str(self.certs.ca_cert), "--ssl-certfile", str(self.certs.server_cert),
                "--ssl-keyfile", str(self.certs.server_key)]

    def _write_connection(self) -> None:
        lines = ["[superlink]", f'default = "{self.CONNECTION}"', "", f"[superlink.{self.CONNECTION}]",
                 f'address = "{HOST}:{self.port}"']
        lines += [f'root-certificates = "{self.certs.ca_cert}"'] if self.certs else ["insecure = true"]
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen:
        exe = shutil.which(cmd[0], path=self.env.get("PATH"))
        if exe is None:
            raise FileNotFoundError(f"{cmd[0]} not found on PATH (install flarebench[flower])")
        log = open(self.dir / f"{name}.log", "w")
        self._logs.append(log)
        return subprocess.Popen([exe, *cmd[1:]], env=self.env, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_listening(self, port: int, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"flower process exited with {proc.returncode} before listening on {port}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"nothing listens on {HOST}:{port} after {self.start_timeout:.0f} s")


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group of ``proc`` (it leads its own session); no error if it is gone."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _toml_value(v) -> str:
    """A run-config value as ``flwr run --run-config`` parses it (TOML scalars; strings in single quotes)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if "'" in s:
        raise ValueError(f"run-config string values cannot contain a single quote: {s!r}")
    return f"'{s}'"
