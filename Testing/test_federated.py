"""Federated fitting (HCCFusionLib.federated): on a planted 3-site cohort with site effects, distributed ComBat
equals the pooled ComBat and federated Newton equals the pooled ridge logistic fit; sites send only aggregates."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from HCCFusionLib.errors import InputError, ModelError
from HCCFusionLib.federated import (combat_from_stats, combat_stats, federated_combat, federated_logistic,
                                    harmonise, harmonise_rows, logistic_aggregates)
from HCCFusionLib.fusion.blocks import ComBat
from HCCFusionLib.fusion.logistic import expit, fit_logistic

SITES = ("A", "B", "C")
FEATURES = [f"PVP__tumour__f{i}" for i in range(10)]


def planted_cohort(rows=60, seed=0, missing=0.0):
    """{site: (features DataFrame, binary outcome)}: latent features drive the outcome; each site adds its own
    shift and scale per feature (the batch effect ComBat removes)."""
    rng = np.random.default_rng(seed)
    weights = np.array([1.2, -0.8, 0.6, 0, 0, 0.4, 0, 0, -0.5, 0])
    cohort = {}
    for k, site in enumerate(SITES):
        latent = rng.normal(size=(rows + 10 * k, len(FEATURES)))
        y = (rng.random(len(latent)) < expit(latent @ weights - 0.3)).astype(float)
        shift, scale = rng.normal(0, 1.5, len(FEATURES)), rng.uniform(0.5, 2.0, len(FEATURES))
        values = latent * scale + shift + 3.0
        if missing:
            values[rng.random(values.shape) < missing] = np.nan
        cohort[site] = (pd.DataFrame(values, columns=FEATURES), y)
    return cohort


def pooled(cohort):
    X = pd.concat([x.assign(center=s) for s, (x, _) in cohort.items()], ignore_index=True)
    return X, np.concatenate([y for _, y in cohort.values()])


def fit_distributed(cohort, **kw):
    return federated_combat({s: (lambda x=x: combat_stats(x.to_numpy())) for s, (x, _) in cohort.items()},
                            FEATURES, **kw)


@pytest.mark.parametrize("missing, empirical_bayes", [(0.0, True), (0.05, True), (0.0, False)])
def test_distributed_combat_equals_pooled(missing, empirical_bayes):
    cohort = planted_cohort(missing=missing)
    X, _ = pooled(cohort)
    reference = ComBat(empirical_bayes=empirical_bayes).fit(X)
    combat = fit_distributed(cohort, empirical_bayes=empirical_bayes)
    for name in ("mean_", "std_", "gamma_", "delta_"):
        np.testing.assert_allclose(getattr(combat, name), getattr(reference, name), atol=1e-9, rtol=0)
    expected = reference.transform(X)
    for site, (x, _) in cohort.items():
        mine = harmonise(x, combat, site).to_numpy()
        known = list(combat.batches_).index(site)  # what a Flower site computes from its parameters alone
        params = dict(mean=combat.mean_, std=combat.std_, gamma=combat.gamma_[known], delta=combat.delta_[known])
        np.testing.assert_allclose(harmonise_rows(x.to_numpy(dtype=float), params), mine, atol=1e-12, rtol=0)
        np.testing.assert_allclose(mine, expected[(X["center"] == site).to_numpy()], atol=1e-6, rtol=0)
        assert np.array_equal(np.isnan(mine), x.isna().to_numpy())
    # the site effects are real: harmonisation moves the site means together
    raw = np.array([x.mean().to_numpy() for x, _ in cohort.values()])
    done = np.array([harmonise(x, combat, s).mean().to_numpy() for s, (x, _) in cohort.items()])
    assert np.ptp(done, axis=0).mean() < 0.5 * np.ptp(raw, axis=0).mean()


def test_federated_newton_equals_pooled_logistic():
    cohort = planted_cohort()
    combat = fit_distributed(cohort)
    local = {s: (harmonise(x, combat, s).to_numpy(), y) for s, (x, y) in cohort.items()}
    sites = [lambda beta, x=x, y=y: logistic_aggregates(x, y, beta) for x, y in local.values()]
    C = 1.0
    beta = federated_logistic(sites, len(FEATURES) + 1, C=C)
    Z = np.vstack([x for x, _ in local.values()])
    y = np.concatenate([y for _, y in local.values()])
    central, _ = fit_logistic(Z, y, C=C)
    assert np.max(np.abs(beta - central)) < 1e-3
    design = np.column_stack([np.ones(len(Z)), Z])
    auc_fed, auc_central = roc_auc_score(y, design @ beta), roc_auc_score(y, design @ central)
    assert abs(auc_fed - auc_central) < 0.01 and auc_central > 0.7


def test_site_messages_are_aggregates_only():
    """The shapes of what a site sends depend on the number of features, never on its number of rows."""
    small, large = planted_cohort(rows=20, seed=1)["A"], planted_cohort(rows=200, seed=1)["A"]
    beta = np.full(len(FEATURES) + 1, 0.1)
    for make in (lambda c: logistic_aggregates(c[0].to_numpy(), c[1], beta),
                 lambda c: combat_stats(c[0].to_numpy())):
        a, b = make(small), make(large)
        assert a.keys() == b.keys()
        assert all(a[k].shape == b[k].shape and a[k].size <= (len(FEATURES) + 1) ** 2 for k in a)


def test_errors_say_what_to_do():
    cohort = planted_cohort(rows=10)
    x, y = cohort["A"]
    with pytest.raises(InputError, match="same feature columns"):
        logistic_aggregates(x.to_numpy(), y, np.zeros(3))
    with pytest.raises(InputError, match="impute"):
        logistic_aggregates(np.full((3, 2), np.nan), np.zeros(3), np.zeros(3))
    with pytest.raises(ModelError, match="same feature columns"):
        combat_from_stats({"A": combat_stats(x.to_numpy()[:, :3])}, FEATURES)
    combat = fit_distributed(cohort)
    with pytest.raises(ModelError, match="not in the training data"):
        harmonise(x, combat, "Z")


@pytest.mark.slow
def test_flower_processes_fit_the_pooled_model_and_sites_send_aggregates_only(tmp_path):
    """SuperLink, three SuperNodes and the ServerApp run as separate processes on loopback; the audit mod records
    every message each site sends: only per-feature aggregates, never rows. Five Newton rounds (each a Flower
    round trip of several seconds) bring the planted cohort's coefficients within 1e-8 of the pooled fit; the
    in-process Newton above runs to convergence."""
    pytest.importorskip("flwr")
    from HCCFusionLib.federated.processes import run_local

    cohort, tables = planted_cohort(), {}
    for site, (x, y) in cohort.items():
        tables[site] = tmp_path / f"{site}.csv"
        x.assign(outcome=y).to_csv(tables[site], index=False)
    audit = tmp_path / "audit.jsonl"
    result = run_local(tables, tmp_path / "run", C=1.0, audit=audit, rounds=5)

    X, y = pooled(cohort)
    reference = ComBat().fit(X)
    np.testing.assert_allclose(result["mean"], reference.mean_, atol=1e-9)
    np.testing.assert_allclose(result["std"], reference.std_, atol=1e-9)
    Z = reference.transform(X)
    central, _ = fit_logistic(Z, y, C=1.0)
    beta = np.array(result["coefficients"])
    assert np.max(np.abs(beta - central)) < 1e-6  # five rounds: about 1e-9
    design = np.column_stack([np.ones(len(Z)), Z])
    assert abs(roc_auc_score(y, design @ beta) - roc_auc_score(y, design @ central)) < 0.01

    entries = [__import__("json").loads(line) for line in audit.read_text().splitlines()]
    d, rows = len(FEATURES), {len(x) for x, _ in cohort.values()}
    assert {e["site"] for e in entries} == set(SITES)
    assert len(entries) == len(SITES) * (1 + result["rounds"])
    allowed = {"combat_stats": {"stats.count": [d], "stats.sum": [d], "stats.centred": [d]},
               "logistic": {"aggregates.gradient": [d + 1], "aggregates.information": [d + 1, d + 1],
                            "aggregates.n": [1]}}  # Flower sends a 0-d array as shape [1]
    for entry in entries:
        assert entry["arrays"] == allowed[entry["task"]], entry
        assert not entry["configs"] and not entry["metrics"], entry
        assert not rows & {n for shape in entry["arrays"].values() for n in shape}


def test_cli_federated_says_what_is_missing(capsys):
    from HCCFusionLib.cli import main

    assert main(["federated", "server"]) != 0
    assert main(["federated", "client", "--site", "A"]) != 0
    assert main(["federated", "server", "--local", "A=/no/such.csv"]) != 0
    err = capsys.readouterr().err
    assert "--sites N" in err and "--superlink HOST:PORT" in err and "SITE=CSV" in err
    site = f"A={Path(__file__).parent}"
    assert main(["federated", "server", "--local", site, "--model", "segmentation"]) != 0
    assert main(["federated", "server", "--local", site, "--model", "segmentation", "--plans", __file__,
                 "--prox-mu", "-1"]) != 0
    err = capsys.readouterr().err
    assert "needs --plans PLANS.json" in err and "--prox-mu must be >= 0" in err


# ---- site-stratified Cox ------------------------------------------------------------------------------------

def planted_survival(rows=80, seed=0):
    """{site: (features, time, event)}: latent features drive the hazard; each site has its own baseline hazard
    (a stratum), its own censoring, and its own feature shift and scale (the batch effect). Times are rounded so
    some tie (Breslow)."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.8, -0.6, 0.5, 0, 0, 0.3, 0, 0, -0.4, 0])
    cohort = {}
    for k, site in enumerate(SITES):
        latent = rng.normal(size=(rows + 10 * k, len(FEATURES)))
        baseline = (0.05, 0.2, 0.6)[k]
        event_time = rng.exponential(1.0 / (baseline * np.exp(latent @ weights)))
        censor = rng.exponential(2.0 / baseline, len(latent))
        time, event = np.round(np.minimum(event_time, censor), 1) + 0.1, (event_time <= censor).astype(float)
        shift, scale = rng.normal(0, 1.5, len(FEATURES)), rng.uniform(0.5, 2.0, len(FEATURES))
        cohort[site] = (pd.DataFrame(latent * scale + shift + 3.0, columns=FEATURES), time, event)
    return cohort


def stratified_cox_reference(X, time, event, strata, alpha=0.0, iterations=50):
    """Pooled Newton on the stratified Breslow partial likelihood, event by event over the pooled rows."""
    beta = np.zeros(X.shape[1])
    for _ in range(iterations):
        w = np.exp(X @ beta)
        gradient, information = -alpha * beta, alpha * np.eye(len(beta))
        for i in np.flatnonzero(event):
            risk = (time >= time[i]) & (strata == strata[i])
            p = w[risk] / w[risk].sum()
            mean = p @ X[risk]
            gradient += X[i] - mean
            information += (X[risk] * p[:, None]).T @ X[risk] - np.outer(mean, mean)
        step = np.linalg.solve(information, gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-12:
            break
    return beta


def test_reference_stratified_cox_equals_scikit_survival_on_one_site():
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    x, time, event = planted_survival()["B"]
    assert len(np.unique(time)) < len(time)  # ties present
    library = CoxPHSurvivalAnalysis(alpha=0.5, ties="breslow").fit(x.to_numpy(), Surv.from_arrays(event, time))
    mine = stratified_cox_reference(x.to_numpy(), time, event, np.zeros(len(x)), alpha=0.5)
    np.testing.assert_allclose(mine, library.coef_, atol=1e-6)


def test_federated_cox_equals_pooled_stratified_cox():
    """Each site sends the gradient and information of its own stratum; the federated Newton fit equals the
    pooled site-stratified fit, and differs from the pooled fit that ignores the sites' baseline hazards."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    from HCCFusionLib.federated import cox_aggregates, federated_cox

    cohort = planted_survival()
    sites = [lambda beta, c=c: cox_aggregates(c[0].to_numpy(), c[1], c[2], beta) for c in cohort.values()]
    for alpha in (0.0, 1.0):
        beta = federated_cox(sites, len(FEATURES), alpha=alpha)
        X = np.vstack([x.to_numpy() for x, _, _ in cohort.values()])
        time, event = (np.concatenate([c[i] for c in cohort.values()]) for i in (1, 2))
        strata = np.repeat(np.arange(len(SITES)), [len(x) for x, _, _ in cohort.values()])
        central = stratified_cox_reference(X, time, event, strata, alpha=alpha)
        assert np.max(np.abs(beta - central)) < 1e-3
    unstratified = CoxPHSurvivalAnalysis(alpha=1.0, ties="breslow").fit(X, Surv.from_arrays(event, time)).coef_
    assert np.max(np.abs(unstratified - central)) > 0.05  # the strata matter on this cohort
    # aggregates only: shapes depend on the number of features, never on the rows or events
    small, large = (cox_aggregates(c[0].to_numpy(), c[1], c[2], beta) for c in
                    (planted_survival(rows=20, seed=1)["A"], planted_survival(rows=200, seed=1)["A"]))
    assert {k: v.shape for k, v in small.items()} == {k: v.shape for k, v in large.items()} == {
        "gradient": (len(FEATURES),), "information": (len(FEATURES), len(FEATURES)), "n": ()}
    with pytest.raises(InputError, match="0/1 event"):
        cox_aggregates(X[:3], time[:3], [0, 2, 1], beta)


def make_certificates(folder, name="ca"):
    """A CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files), with `cryptography`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def write(path, data):
        path.write_bytes(data)
        return str(path)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"HCCFusion test {name}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {"ca": write(folder / f"{name}.pem", ca.public_bytes(pem)),
            "certfile": write(folder / f"{name}_server.pem", server.public_bytes(pem)),
            "keyfile": write(folder / f"{name}_server.key", key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))}


@pytest.mark.slow  # ~60-150 s on 2 shared cores: a SuperLink, 3 SuperNodes, 15 ClientApp messages, a 2nd SuperLink
def test_flower_cox_over_tls_fits_the_pooled_stratified_model(tmp_path, capsys):
    """Server and three sites over TLS (a CA and server certificate made here) on loopback: distributed ComBat then
    federated Newton for the site-stratified Cox model; every message a site sends is per-feature aggregates. A
    site without the CA, or with another CA, is refused with a clear error before its SuperNode starts."""
    pytest.importorskip("flwr")
    import json
    import subprocess

    from HCCFusionLib.cli import main
    from HCCFusionLib.federated.processes import (flower_environment, free_port, run_local, superlink_command,
                                                  wait_for_port)

    tls, other = make_certificates(tmp_path), make_certificates(tmp_path, "other_ca")
    cohort, tables = planted_survival(), {}
    for site, (x, time, event) in cohort.items():
        tables[site] = tmp_path / f"{site}.csv"
        x.assign(time=time, event=event).to_csv(tables[site], index=False)
    audit = tmp_path / "audit.jsonl"
    result = run_local(tables, tmp_path / "run", C=1.0, audit=audit, rounds=4, tls=tls, model="cox")  # ~1e-11

    X = pd.concat([x.assign(center=s) for s, (x, _, _) in cohort.items()], ignore_index=True)
    Z = ComBat().fit(X).transform(X)
    time, event = (np.concatenate([c[i] for c in cohort.values()]) for i in (1, 2))
    strata = np.repeat(np.arange(len(SITES)), [len(x) for x, _, _ in cohort.values()])
    central = stratified_cox_reference(Z, time, event, strata, alpha=1.0)
    assert result["model"] == "cox" and len(result["coefficients"]) == len(FEATURES)
    assert np.max(np.abs(np.array(result["coefficients"]) - central)) < 1e-3

    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    d, rows = len(FEATURES), {len(x) for x, _, _ in cohort.values()}
    assert len(entries) == len(SITES) * (1 + result["rounds"]) and {e["site"] for e in entries} == set(SITES)
    allowed = {"combat_stats": {"stats.count": [d], "stats.sum": [d], "stats.centred": [d]},
               "cox": {"aggregates.gradient": [d], "aggregates.information": [d, d], "aggregates.n": [1]}}
    for entry in entries:
        assert entry["arrays"] == allowed[entry["task"]] and not entry["configs"] and not entry["metrics"], entry
        assert not rows & {n for shape in entry["arrays"].values() for n in shape}

    port = free_port()
    superlink = subprocess.Popen(superlink_command(port, tls), env=flower_environment(tmp_path / "home"),
                                 cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(f"127.0.0.1:{port}")
        client = ["federated", "client", "--superlink", f"127.0.0.1:{port}", "--site", "A", "--table",
                  str(tables["A"])]
        capsys.readouterr()
        assert main(client) != 0
        assert "uses TLS: pass --root-certificates" in capsys.readouterr().err
        assert main([*client, "--root-certificates", other["ca"]]) != 0
        assert "does not verify" in capsys.readouterr().err
    finally:
        superlink.terminate()
        superlink.wait(timeout=10)


def _listen(tls=None):
    """A loopback server for one-off connections (TLS with `tls` certificates, else plain); its HOST:PORT."""
    import socket
    import ssl
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["certfile"], tls["keyfile"])

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                if context:
                    with context.wrap_socket(conn, server_side=True) as secure:
                        secure.recv(1)
                else:
                    conn.recv(1024)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, f"127.0.0.1:{server.getsockname()[1]}"


def test_site_checks_the_superlinks_tls_before_it_starts(tmp_path):
    """`federated client`'s pre-check: a clear error for each way a site's TLS set-up does not fit the server's."""
    from HCCFusionLib.federated.processes import check_superlink, free_port

    tls, other = make_certificates(tmp_path), make_certificates(tmp_path, "other_ca")
    (secure, tls_address), (plain, plain_address) = _listen(tls), _listen()
    try:
        check_superlink(tls_address, tls["ca"])
        check_superlink(plain_address)
        with pytest.raises(InputError, match="uses TLS: pass --root-certificates"):
            check_superlink(tls_address)
        with pytest.raises(InputError, match="does not verify"):
            check_superlink(tls_address, other["ca"])
        with pytest.raises(InputError, match="does not use TLS"):
            check_superlink(plain_address, tls["ca"])
    finally:
        secure.close()
        plain.close()
    with pytest.raises(ModelError, match="Cannot reach"):
        check_superlink(f"127.0.0.1:{free_port()}", tls["ca"])
