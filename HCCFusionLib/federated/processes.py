"""Command lines for the Flower processes of a federated run (SuperLink, one SuperNode per site, `flwr run`).

`app_folder` writes the small Flower app (a pyproject naming `federated.flower`'s ServerApp and ClientApp);
`run_local` starts every process on loopback with free ports (what the tests and `federated server --local`
use). Across hospitals, each site runs `supernode_command` with TLS and its authentication keys instead.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from ..errors import DependencyError, InputError, ModelError

log = logging.getLogger(__name__)
APP_MODULE = "hccfusion_federated_app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(address: str, timeout: float = 60.0) -> None:
    """Block until something listens on HOST:PORT (a SuperLink that has finished starting)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ModelError(f"Nothing listens on {address} after {timeout:.0f} s: is the SuperLink running?")
            time.sleep(0.2)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise DependencyError(f"'{name}' not found: install Flower with pip install 'hccfusion[federated]'.")
    return found


def app_folder(folder: Path, sites: int, out: Path, C: float = 1.0, rounds: int = 30, model: str = "logistic",
               config: dict | None = None) -> Path:
    """Write the Flower app (pyproject + a module re-exporting the apps) into `folder`; `config`: more run-config
    entries (str, int, float or bool)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{APP_MODULE}.py").write_text(
        "from HCCFusionLib.federated import flower\n\nserver_app = flower.server_app\nclient_app = flower.client_app\n",
        encoding="utf-8")
    (folder / "pyproject.toml").write_text(f"""[project]
name = "hccfusion-federated"
version = "0.1.0"
description = "HCCFusion federated fits (ComBat, logistic, Cox, segmentation)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "hccfusion"

[tool.flwr.app.components]
serverapp = "{APP_MODULE}:server_app"
clientapp = "{APP_MODULE}:client_app"

[tool.flwr.app.config]
sites = {int(sites)}
C = {float(C)!r}
rounds = {int(rounds)}
model = {json.dumps(model)}
out = {json.dumps(str(out))}
""" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in (config or {}).items()), encoding="utf-8")
    return folder


def superlink_command(port: int, tls: dict | None = None, host: str = "127.0.0.1", auth: bool = False) -> list[str]:
    """SuperLink: `tls` = {"certfile", "keyfile", "ca"} paths, or None for --insecure (loopback only); `auth`
    admits only SuperNodes whose public keys were registered (`flwr supernode register KEY.pub`)."""
    security = ["--insecure"] if not tls else ["--ssl-certfile", tls["certfile"], "--ssl-keyfile", tls["keyfile"],
                                               "--ssl-ca-certfile", tls["ca"]]
    return [_tool("flower-superlink"), *security, *(["--enable-supernode-auth"] if auth else []), "--host", host,
            "--port", str(port)]


def supernode_command(superlink: str, site: str, table: Path, port: int, audit: Path | None = None,
                      root_certificates: str | None = None, auth_keys: tuple[str, str] | None = None) -> list[str]:
    """SuperNode of one site: its node config names the site and its own feature table."""
    config = f'site="{site}" table="{Path(table).resolve()}"' + (f' audit="{Path(audit).resolve()}"' if audit else "")
    security = ["--insecure"] if not root_certificates else ["--root-certificates", root_certificates]
    if auth_keys:
        security += ["--auth-supernode-private-key", auth_keys[0], "--auth-supernode-public-key", auth_keys[1]]
    return [_tool("flower-supernode"), *security, "--superlink", superlink, "--node-config", config,
            "--port", str(port)]


def check_superlink(address: str, root_certificates: str | None = None, timeout: float = 10.0) -> None:
    """Before a site's SuperNode starts: reach the SuperLink at HOST:PORT and check its TLS against the CA.

    Raises a clear error where the SuperNode would only retry: nothing listens; the SuperLink uses TLS but the
    site gave no CA; the CA did not sign the SuperLink's certificate (or the host name is not in it); the site
    gave a CA but the SuperLink is not using TLS.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--superlink takes HOST:PORT (got {address!r}).")
    if root_certificates and not Path(root_certificates).is_file():
        raise InputError(f"Root certificate {root_certificates} not found: give the CA certificate (PEM) that "
                         "signed the SuperLink's certificate, from the coordinating centre.")
    try:
        context = ssl.create_default_context(cafile=root_certificates)
        if not root_certificates:  # only: does it speak TLS at all?
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            speaks_tls = True
    except ssl.SSLCertVerificationError as exc:
        raise InputError(f"The SuperLink at {address} sent a certificate that {root_certificates} does not verify "
                         f"({exc.verify_message}): ask the coordinating centre for the CA that signed it, and "
                         "connect with the host name its certificate names.") from exc
    except (ssl.SSLError, ConnectionResetError, socket.timeout):
        speaks_tls = False
    except OSError as exc:
        raise ModelError(f"Cannot reach the SuperLink at {address} ({exc}): is `federated server` running there, "
                         "and does the firewall let this site open that port?") from exc
    if speaks_tls and not root_certificates:
        raise InputError(f"The SuperLink at {address} uses TLS: pass --root-certificates CA.pem (the CA certificate "
                         "that signed its certificate, from the coordinating centre).")
    if root_certificates and not speaks_tls:
        raise InputError(f"The SuperLink at {address} does not use TLS, but --root-certificates was given: start "
                         "the server with --tls CERT KEY CA (or, on loopback only, leave out --root-certificates).")


def flower_environment(home: Path) -> dict:
    """Environment of the Flower processes: FLWR_HOME, Flower's telemetry off, this interpreter's scripts first on
    PATH, this package on PYTHONPATH."""
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0")  # no usage reports leave a site
    # the SuperLink starts `flower-superexec` by name: this interpreter's scripts folder (a venv's bin) comes first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])])
    paths = [str(Path(__file__).resolve().parents[2])] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_local(tables: dict[str, Path], work: Path, C: float = 1.0, rounds: int = 30, audit: Path | None = None,
              timeout: float = 240, sites: int | None = None, tls: dict | None = None, host: str = "127.0.0.1",
              port: int | None = None, auth: bool = False, model: str = "logistic", config: dict | None = None) -> dict:
    """Run a federated fit: a SuperLink, one SuperNode per entry of `tables` (none when the sites run their own,
    `federated client`), `flwr run` for `sites` sites; return the result. Loopback and --insecure unless `tls`."""
    work = Path(work)
    home, out = work / "flwr_home", work / "result.json"
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    fleet = control = f"{'127.0.0.1' if host in ('0.0.0.0', '127.0.0.1') else host}:{port}"
    security = "insecure = true" if not tls else f"root-certificates = {json.dumps(str(tls['ca']))}"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{control}"\n{security}\n',
        encoding="utf-8")
    app = app_folder(work / "app", sites or len(tables), out, C, rounds, model, config)
    env, procs = flower_environment(home), []
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def start(name, command):
        handle = open(logs / f"{name}.log", "w", encoding="utf-8")
        procs.append((subprocess.Popen(command, env=env, cwd=work, stdout=handle, stderr=subprocess.STDOUT), handle))

    try:
        start("superlink", superlink_command(port, tls, host, auth))
        wait_for_port(control)
        for site, table in tables.items():
            start(f"site_{site}", supernode_command(fleet, site, table, free_port(), audit,
                                                    tls["ca"] if tls else None))
        time.sleep(2)
        submitted = subprocess.run([_tool("flwr"), "run", str(app), "local"], env=env, cwd=work,
                                   capture_output=True, text=True, timeout=120)
        log.info("flwr run: %s", submitted.stdout[-2000:])
        deadline = time.monotonic() + timeout
        while not out.is_file():
            if time.monotonic() > deadline or submitted.returncode:
                tails = {p.name: p.read_text(encoding="utf-8")[-1500:] for p in logs.glob("*.log")}
                raise ModelError(f"Federated run gave no result (flwr run: {submitted.returncode} "
                                 f"{submitted.stdout[-800:]} {submitted.stderr[-800:]}); logs: {tails}")
            time.sleep(0.5)
        result = json.loads(out.read_text(encoding="utf-8"))
        if "error" in result:
            raise ModelError(f"Federated run failed on the server: {result['error']} (logs in {logs}).")
        return result
    finally:
        for proc, handle in reversed(procs):
            proc.terminate()
        for proc, handle in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            handle.close()
