"""Federated verb: `federated server` (SuperLink + the fit) and `federated client` (one site's SuperNode)."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from ..errors import InputError
from .common import verb

log = logging.getLogger(__name__)


@verb("federated", "Federated ComBat + logistic or Cox fit, or segmentation FedAvg/FedProx, across centres with "
                   "Flower: `server` runs the SuperLink and the fit, `client` a site's SuperNode (its rows never "
                   "leave it)")
def cmd_federated(args, progress):
    from ..federated import processes

    if args.role == "client":
        if not (args.superlink and args.site and args.table):
            raise InputError("federated client needs --superlink HOST:PORT, --site NAME and --table CSV.")
        processes.check_superlink(args.superlink, args.root_certificates)
        command = processes.supernode_command(args.superlink, args.site, args.table, args.port or 9094, args.audit,
                                              args.root_certificates, tuple(args.auth_keys or ()) or None)
        return subprocess.call(command)
    tables = dict(_site_table(item) for item in args.local or ())
    if not tables and not args.sites:
        raise InputError("federated server needs --sites N (the sites connect with `federated client`) or "
                         "--local SITE=CSV for each site (all on this machine, loopback).")
    tls = dict(zip(("certfile", "keyfile", "ca"), args.tls)) if args.tls else None
    result = processes.run_local(tables, args.out, C=args.C, rounds=args.rounds, sites=args.sites or None,
                                 tls=tls, host=args.host, port=args.port, timeout=args.timeout,
                                 auth=args.supernode_auth, model=args.model, config=_segmentation_config(args))
    progress(1.0, f"federated {args.model} fit in {result['rounds']} rounds -> {Path(args.out) / 'result.json'}")
    return 0


def _site_table(item: str) -> tuple[str, Path]:
    site, _, table = item.partition("=")
    if not site or not Path(table).exists():
        raise InputError(f"--local takes SITE=CSV (or SITE=FOLDER of labelled studies with --model segmentation) "
                         f"with an existing path (got {item!r}).")
    return site, Path(table)


def _segmentation_config(args) -> dict | None:
    """Run config of `--model segmentation`: the plans (a model's plans.json), local steps, FedProx mu."""
    if args.model != "segmentation":
        return None
    if not args.plans or not args.plans.is_file():
        raise InputError("federated server --model segmentation needs --plans PLANS.json (the plans.json of the "
                         "model to fine-tune, or of a planned dataset).")
    if args.prox_mu is not None and args.prox_mu < 0:
        raise InputError(f"--prox-mu must be >= 0 (got {args.prox_mu}); leave it out for FedAvg.")
    return {"plans": args.plans.read_text(encoding="utf-8"), "steps": args.local_steps, "seed": 0,
            "prox_mu": -1.0 if args.prox_mu is None else args.prox_mu}


def _federated_args(p):
    p.add_argument("role", choices=("server", "client"))
    p.add_argument("--out", type=Path, default=Path("federated"), help="server: work folder (result.json, logs)")
    p.add_argument("--sites", type=int, default=0, help="server: number of sites to wait for")
    p.add_argument("--local", action="append", metavar="SITE=CSV", help="server: also run this site here")
    p.add_argument("--model", choices=("logistic", "cox", "segmentation"), default="logistic",
                   help="server: logistic (CSV column outcome), Cox stratified by site (CSV columns time, event), or "
                        "segmentation (FedAvg/FedProx; each site's --table is a folder of labelled studies)")
    p.add_argument("--plans", type=Path, help="server, segmentation: the network's plans.json")
    p.add_argument("--local-steps", type=int, default=20, help="server, segmentation: training steps per round")
    p.add_argument("--prox-mu", type=float, help="server, segmentation: FedProx mu (default: FedAvg)")
    p.add_argument("--C", type=float, default=1.0, help="server: inverse ridge strength on the slopes")
    p.add_argument("--rounds", type=int, default=30, help="server: most Newton rounds (segmentation: rounds)")
    p.add_argument("--timeout", type=float, default=3600, help="server: seconds to wait for the result")
    p.add_argument("--host", default="127.0.0.1", help="server: address to listen on (0.0.0.0 across sites)")
    p.add_argument("--port", type=int, default=0, help="server: SuperLink port; client: the SuperNode's own port")
    p.add_argument("--tls", nargs=3, metavar=("CERT", "KEY", "CA"), help="server: TLS certificate, key, CA")
    p.add_argument("--supernode-auth", action="store_true",
                   help="server: admit only sites whose public keys are registered (flwr supernode register)")
    p.add_argument("--superlink", help="client: the server's HOST:PORT")
    p.add_argument("--site", help="client: this site's name")
    p.add_argument("--table", type=Path, help="client: this site's feature CSV (feature columns + outcome), or "
                                               "its folder of labelled studies (segmentation)")
    p.add_argument("--audit", type=Path, help="client: JSONL log of every message this site sends")
    p.add_argument("--root-certificates", help="client: CA certificate of the server (TLS)")
    p.add_argument("--auth-keys", nargs=2, metavar=("PRIVATE", "PUBLIC"), help="client: SuperNode auth key pair")


cmd_federated.configure = _federated_args
