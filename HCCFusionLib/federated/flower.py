"""Flower (flwr) wiring of the federated rounds: a ServerApp and a ClientApp, run by a SuperLink and one
SuperNode per site (separate processes; loopback in the tests, TLS across hospitals).

Protocol, all as Flower query messages: round 0 asks every site for `site.combat_stats` of its feature table;
the server fits distributed ComBat and, in each Newton round, sends every site the coefficients and that site's
ComBat parameters; the site harmonises its own rows and answers with `site.logistic_aggregates`. The server writes
the coefficients and the ComBat parameters as JSON to the run-config path `out`. Each site's node config names its
`site`, its feature `table` (CSV with the feature columns and `outcome`) and, optionally, `audit`: a JSONL file
where `audit_mod` records every message the site sends (record names, array shapes) for inspection.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DependencyError, InputError
from ..files import atomic_write
from ..fusion.blocks import ComBat
from . import server as fed_server
from . import site as fed_site

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
except ImportError as exc:  # pragma: no cover - the extra is optional
    raise DependencyError("Federated runs need Flower: pip install 'hccfusion[federated]'.") from exc

log = logging.getLogger(__name__)
OUTCOME = "outcome"


def _arrays(**arrays) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=float)) for k, v in arrays.items()})


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


# ---- site (ClientApp) ----------------------------------------------------------------------------------------

def _site_table(context: Context) -> tuple[str, pd.DataFrame]:
    site, table = str(context.node_config.get("site", "")), str(context.node_config.get("table", ""))
    if not site or not Path(table).is_file():
        raise InputError(f"Site node config needs site=NAME and table=CSV (got site={site!r}, table={table!r}).")
    return site, pd.read_csv(table)


def _site_combat(site: str, features, params: dict[str, np.ndarray]) -> ComBat:
    return ComBat.from_parameters(features, [site], params["mean"], params["std"], params["gamma"][None, :],
                                  params["delta"][None, :])


def audit_mod(message: Message, context: Context, call_next) -> Message:
    """ClientApp mod: append what this site sends (record names and array shapes) to node config `audit`."""
    reply = call_next(message, context)
    path = context.node_config.get("audit")
    if path and reply.has_content():
        entry = {"site": context.node_config.get("site"), "task": message.content["task"]["name"],
                 "arrays": {f"{r}.{k}": list(a.shape) for r, rec in reply.content.array_records.items()
                            for k, a in rec.items()},
                 "configs": {r: sorted(rec) for r, rec in reply.content.config_records.items()},
                 "metrics": {r: sorted(rec) for r, rec in reply.content.metric_records.items()}}
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
    return reply


client_app = ClientApp(mods=[audit_mod])


@client_app.query()
def answer(message: Message, context: Context) -> Message:
    """A site's answer to one server query: ComBat statistics or logistic aggregates, never rows."""
    site, table = _site_table(context)
    task = message.content["task"]["name"]
    features = [c for c in table.columns if c != OUTCOME]
    if task == "combat_stats":
        content = RecordDict({"stats": _arrays(**fed_site.combat_stats(table[features].to_numpy(dtype=float)))})
    elif task == "logistic":
        params = _numpy(message.content["params"])
        X = fed_site.harmonise(table[features], _site_combat(site, features, params), site).to_numpy()
        content = RecordDict({"aggregates": _arrays(**fed_site.logistic_aggregates(X, table[OUTCOME], params["beta"]))})
    else:
        raise InputError(f"Unknown federated task {task!r}.")
    return Message(content, reply_to=message)


# ---- server (ServerApp) --------------------------------------------------------------------------------------

server_app = ServerApp()


def _ask(grid: Grid, nodes, task: str, group: str, params=None) -> dict[int, dict[str, np.ndarray]]:
    messages = []
    for node in nodes:
        content = RecordDict({"task": ConfigRecord({"name": task})})
        if params is not None:
            content["params"] = _arrays(**params(node))
        messages.append(Message(content, dst_node_id=node, message_type="query", group_id=group))
    replies = list(grid.send_and_receive(messages, timeout=120))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) != len(messages):
        raise InputError(f"{len(messages) - len(replies) + len(failed)} site(s) did not answer {task}: "
                         f"{[r.error.reason for r in failed]}")
    return {r.metadata.src_node_id: _numpy(next(iter(r.content.array_records.values()))) for r in replies}


@server_app.main()
def run_server(grid: Grid, context: Context) -> None:
    """Distributed ComBat (one round), then federated Newton; the result (or the error) goes to `out`."""
    try:
        result = _fit(grid, context.run_config)
    except Exception as exc:  # reported to whoever waits on `out`, then raised for Flower's own log
        result = {"error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        with atomic_write(Path(str(context.run_config["out"]))) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1), encoding="utf-8")


def _fit(grid: Grid, cfg) -> dict:
    """Distributed ComBat (one round), then federated Newton on the harmonised features."""
    nodes = sorted(grid.get_node_ids())
    deadline = time.monotonic() + float(cfg.get("wait", 120))
    while len(nodes) < int(cfg["sites"]):
        if time.monotonic() > deadline:
            raise InputError(f"Only {len(nodes)} of {cfg['sites']} sites connected: start a SuperNode per site.")
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    stats = _ask(grid, nodes, "combat_stats", "0")
    d = len(next(iter(stats.values()))["count"])
    combat = fed_server.combat_from_stats({str(n): s for n, s in stats.items()}, [f"f{i}" for i in range(d)])
    index = {n: list(combat.batches_).index(str(n)) for n in nodes}
    beta, C = np.zeros(d + 1), float(cfg.get("C", 1.0))
    for round_ in range(int(cfg.get("rounds", 30))):
        def params(node, beta=beta):
            i = index[node]
            return {"beta": beta, "mean": combat.mean_, "std": combat.std_, "gamma": combat.gamma_[i],
                    "delta": combat.delta_[i]}
        aggregates = list(_ask(grid, nodes, "logistic", str(round_ + 1), params).values())
        new = fed_server.newton_step(aggregates, beta, C)
        step, beta = float(np.max(np.abs(new - beta))), new
        if step < 1e-10:
            break
    return {"coefficients": beta.tolist(), "rounds": round_ + 1, "mean": combat.mean_.tolist(),
              "std": combat.std_.tolist(), "gamma": combat.gamma_.tolist(), "delta": combat.delta_.tolist(),
              "nodes": list(combat.batches_)}
