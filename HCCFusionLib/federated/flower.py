"""Flower (flwr) wiring of the federated rounds: a ServerApp and a ClientApp, run by a SuperLink and one
SuperNode per site (separate processes; loopback in the tests, TLS across hospitals).

Protocol, all as Flower query messages: round 0 asks every site for `site.combat_stats` of its feature table;
the server fits distributed ComBat and, in each Newton round, sends every site the coefficients and that site's
ComBat parameters; the site harmonises its own rows and answers with `site.logistic_aggregates`. The server writes
the coefficients and the ComBat parameters as JSON to the run-config path `out`. Run-config `model` picks the
Newton model: "logistic" (`site.logistic_aggregates`, CSV column `outcome`) or "cox" (`site.cox_aggregates`: Cox
stratified by site, CSV columns `time` and `event`). Each site's node config names its `site`, its feature
`table` (CSV with the feature columns and the outcome columns) and, optionally, `audit`: a JSONL file where
`audit_mod` records every message the site sends (record names, array shapes) for inspection.
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
MODELS = {"logistic": (OUTCOME,), "cox": ("time", "event")}  # model: its outcome columns in a site's table
SEGMENTATION = "segmentation"


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
    features = [c for c in table.columns if c not in {c for columns in MODELS.values() for c in columns}]
    if task == "combat_stats":
        content = RecordDict({"stats": _arrays(**fed_site.combat_stats(table[features].to_numpy(dtype=float)))})
    elif task in MODELS:
        missing = [c for c in MODELS[task] if c not in table.columns]
        if missing:
            raise InputError(f"Site {site}: the {task} model needs column(s) {missing} in its table.")
        params = _numpy(message.content["params"])
        X = fed_site.harmonise_rows(table[features].to_numpy(dtype=float), params)
        aggregates = (fed_site.logistic_aggregates(X, table[OUTCOME], params["beta"]) if task == "logistic" else
                      fed_site.cox_aggregates(X, table["time"], table["event"], params["beta"]))
        content = RecordDict({"aggregates": _arrays(**aggregates)})
    else:
        raise InputError(f"Unknown federated task {task!r}.")
    return Message(content, reply_to=message)


# ---- server (ServerApp) --------------------------------------------------------------------------------------

server_app = ServerApp()


def _send(grid: Grid, messages: list, task: str, timeout: float = 120) -> list:
    """Send one message per site and wait for every answer; a missing or failed answer is an error."""
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) != len(messages):
        raise InputError(f"{len(messages) - len(replies) + len(failed)} site(s) did not answer {task}: "
                         f"{[r.error.reason for r in failed]}")
    return replies


def _ask(grid: Grid, nodes, task: str, group: str, params=None) -> dict[int, dict[str, np.ndarray]]:
    messages = []
    for node in nodes:
        content = RecordDict({"task": ConfigRecord({"name": task})})
        if params is not None:
            content["params"] = _arrays(**params(node))
        messages.append(Message(content, dst_node_id=node, message_type="query", group_id=group))
    replies = _send(grid, messages, task)
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
    """Distributed ComBat (one round), then federated Newton on the harmonised features (or FedAvg rounds of the
    segmentation network)."""
    nodes = sorted(grid.get_node_ids())
    deadline = time.monotonic() + float(cfg.get("wait", 120))
    while len(nodes) < int(cfg["sites"]):
        if time.monotonic() > deadline:
            raise InputError(f"Only {len(nodes)} of {cfg['sites']} sites connected: start a SuperNode per site.")
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    if str(cfg.get("model")) == SEGMENTATION:
        return _fit_segmentation(grid, cfg, nodes)
    stats = _ask(grid, nodes, "combat_stats", "0")
    d = len(next(iter(stats.values()))["count"])
    combat = fed_server.combat_from_stats({str(n): s for n, s in stats.items()}, [f"f{i}" for i in range(d)])
    index = {n: list(combat.batches_).index(str(n)) for n in nodes}
    model = str(cfg.get("model", "logistic"))
    if model not in MODELS:
        raise InputError(f"Unknown federated model {model!r}: use {' or '.join(MODELS)}.")
    intercept = model == "logistic"
    beta, C = np.zeros(d + intercept), float(cfg.get("C", 1.0))
    for round_ in range(int(cfg.get("rounds", 30))):
        def params(node, beta=beta):
            i = index[node]
            return {"beta": beta, "mean": combat.mean_, "std": combat.std_, "gamma": combat.gamma_[i],
                    "delta": combat.delta_[i]}
        aggregates = list(_ask(grid, nodes, model, str(round_ + 1), params).values())
        new = fed_server.newton_step(aggregates, beta, C, intercept)
        step, beta = float(np.max(np.abs(new - beta))), new
        if step < 1e-10:
            break
    return {"model": model, "coefficients": beta.tolist(), "rounds": round_ + 1, "mean": combat.mean_.tolist(),
              "std": combat.std_.tolist(), "gamma": combat.gamma_.tolist(), "delta": combat.delta_.tolist(),
              "nodes": list(combat.batches_)}


# ---- segmentation network: FedAvg / FedProx rounds -----------------------------------------------------------

@client_app.train()
def train_round(message: Message, context: Context) -> Message:
    """A site's round: train the global weights on its own cases (node config `table`: a folder of study folders
    with label maps); answer with the new weights and the number of cases."""
    from ..segmentation.data import cases_from_folder
    from . import segmentation as fed_seg

    task = message.content["task"]
    plans, mu = json.loads(str(task["plans"])), float(task["prox_mu"])
    site, folder = str(context.node_config.get("site", "")), str(context.node_config.get("table", ""))
    if not site or not Path(folder).is_dir():
        raise InputError(f"Site node config needs site=NAME and table=FOLDER of labelled studies (got site={site!r}, "
                         f"table={folder!r}).")
    weights, cases = fed_seg.local_update(
        cases_from_folder(folder, plans["channels"]), plans, _numpy(message.content["weights"]),
        steps=int(task["steps"]), seed=int(task["seed"]), lr=float(task["lr"]), prox_mu=mu if mu >= 0 else None)
    return Message(RecordDict({"weights": _weights(weights), "count": _arrays(cases=np.asarray([float(cases)]))}),
                   reply_to=message)


def _weights(weights) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()})


def _fit_segmentation(grid: Grid, cfg, nodes) -> dict:
    """FedAvg (run config prox_mu < 0) or FedProx rounds; the global weights go to `out` + .safetensors."""
    from ..files import sha256_file
    from . import segmentation as fed_seg

    plans, seed = json.loads(str(cfg["plans"])), int(cfg.get("seed", 0))
    weights = fed_seg.initial_weights(plans, seed)
    for round_ in range(int(cfg.get("rounds", 3))):
        task = ConfigRecord({"name": SEGMENTATION, "plans": str(cfg["plans"]), "steps": int(cfg.get("steps", 10)),
                             "seed": seed + round_, "lr": float(cfg.get("lr", 3e-3)),
                             "prox_mu": float(cfg.get("prox_mu", -1.0))})
        messages = [Message(RecordDict({"task": task, "weights": _weights(weights)}), dst_node_id=node,
                            message_type="train", group_id=str(round_)) for node in nodes]
        replies = _send(grid, messages, SEGMENTATION, timeout=float(cfg.get("round_timeout", 600)))
        weights = fed_seg.fedavg([(_numpy(r.content["weights"]), float(r.content["count"]["cases"].numpy()[0]))
                                  for r in replies])
        log.info("federated segmentation round %d done (%d sites)", round_ + 1, len(replies))
    path = Path(str(cfg["out"])).with_suffix(".safetensors")
    fed_seg.save_weights(weights, path)
    return {"model": SEGMENTATION, "rounds": round_ + 1, "sites": len(nodes), "weights": str(path),
            "sha256": sha256_file(path)}
