"""Federated fitting across centres: each site computes aggregates of its own rows, the server combines them.

No row ever leaves a site. `site` holds the site-side functions (they return only arrays whose shapes depend on
the number of features, never on the number of rows), `server` the combining ones: federated Newton for ridge
logistic regression and site-stratified Cox regression, and distributed ComBat (Chen et al. 2022) from per-site
summary statistics, giving the same fit as the pooled `fusion.blocks.ComBat`, `fusion.logistic.fit_logistic` and
a pooled Cox fit stratified by site. `flower` runs the same rounds as
Flower (flwr) server and client processes.
"""
from .server import (combat_from_stats, federated_combat, federated_cox, federated_logistic, federated_newton,
                     newton_step)
from .site import combat_stats, cox_aggregates, harmonise, harmonise_rows, logistic_aggregates

__all__ = ["combat_stats", "cox_aggregates", "harmonise", "harmonise_rows", "logistic_aggregates",
           "combat_from_stats", "federated_combat", "federated_cox", "federated_logistic", "federated_newton",
           "newton_step"]
