"""Shared pytest fixtures and the suite's parallel layout.

- `shared_data`: the real reference data folder.
- Under pytest-xdist (`make test` runs `-n 3 --dist loadgroup --no-loadscope-reorder`), each worker gets its share
  of the CPUs (torch, OpenMP and ITK threads); a module's tests run on one worker (its fixtures built once, in
  file order), except in the modules named in `SPLIT`, whose tests run wherever a worker is free, together where
  they share an expensive fixture. The longest groups start first (`FIRST`), so that the workers finish together.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HCCFUSION_SHARED_DATA", ROOT.parent / "shared" / "data"))

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if os.environ.get("PYTEST_XDIST_WORKER"):  # set before torch / ITK / BLAS start their thread pools
    THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = str(THREADS)
else:
    THREADS = 0


def pytest_configure(config):
    if THREADS:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
        try:
            import torch
        except ImportError:
            return
        torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real reference files); tests that need it skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (present in CI; see its README)")
    return SHARED_DATA


def _run_cli(*args) -> tuple[int, str]:
    import contextlib
    import io

    from HCCFusionLib import cli

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["--progress", "none", "run", *map(str, args)])
    return code, printed.getvalue()


@pytest.fixture(scope="session")
def real_ct_run(shared_data, tmp_path_factory):
    """(run folder, exit code, printed) of `hccfusion run` on a real portal-venous CT series (CRLM-CT-1004)."""
    out = tmp_path_factory.mktemp("real_ct") / "out"
    return out, *_run_cli(shared_data / "real" / "liver_ct_contrast" / "CRLM-CT-1004", "--out", out)


@pytest.fixture(scope="session")
def real_mr_run(shared_data, tmp_path_factory):
    """(run folder, exit code, printed) of `hccfusion run --mode rigid` on a real T2 + ADC MR study (SCAN_001)."""
    out = tmp_path_factory.mktemp("real_mr") / "out"
    return out, *_run_cli(shared_data / "real" / "liver_mr_t2_adc" / "SCAN_001", "--out", out, "--mode", "rigid")


# ---------------------------------------------------------------- grouping and order under pytest-xdist
# Expensive session fixtures used by several modules: their tests run on one worker, so each is built once.
SHARED_SESSION_FIXTURES = {"real_ct_run", "real_mr_run"}
# Module-scoped fixtures cheap enough to build once per worker: they do not tie their tests to one worker.
CHEAP_MODULE_FIXTURES = {"models", "presets", "fast_preset", "qt_loaded", "real_ct", "phantom_study", "small",
                         "small_study", "cohort", "mvi", "tables", "phantom", "patient", "rigid_patient",
                         "deformable_patient", "_threads", "real_ct_as_two_phases"}
# The longest groups (named by a module-scoped fixture, or by a test for a test that needs none), started first;
# measured with `--durations` on 2 cores. Everything else follows in collection order.
FIRST = ["real_mr_run", "real_ct_run", "test_segmentation.py::full_size", "test_segmentation.py::trained",
         "test_federated_segmentation.py::sites",
         "test_federated.py::test_flower_cox_over_tls_fits_the_pooled_stratified_model",
         "test_federated.py::test_flower_processes_fit_the_pooled_model_and_sites_send_aggregates_only",
         "test_deepfusion.py::texture",
         "test_liverlesion.py::slab",
         "test_registration.py::rigid_result", "test_demo.py::demo_run", "test_lirads.py::designed",
         "test_pipeline.py::result", "test_slicer_logic.py::fusion_bundle"]


def _groups(items) -> dict:
    """Item -> (group name, shared): tests that share an expensive module-scoped fixture are one group
    (union-find over the fixtures each test uses); a test without one is a group of its own (not shared),
    free to run on any worker."""
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keys = {}
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        infos = getattr(item, "_fixtureinfo", None)
        defs = {name: d[-1].scope for name, d in (infos.name2fixturedefs.items() if infos else ()) if d}
        keys[item] = sorted([f"{module}::{n}" for n, scope in defs.items() if scope in ("module", "package", "class")
                             and n not in CHEAP_MODULE_FIXTURES] + [n for n in defs if n in SHARED_SESSION_FIXTURES])
        for key in keys[item]:
            parent[find(key)] = find(keys[item][0])
    return {item: (find(keys[item][0]), True) if keys[item] else
            (f"{item.nodeid.split('::')[0].rsplit('/', 1)[-1]}::{getattr(item, 'originalname', item.name)}", False)
            for item in items}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup`: put the longest groups first (the scheduler queues work in collection order)."""
    if getattr(config.option, "loadgroup", False):  # xdist sets it on its workers for --dist loadgroup
        groups = _groups(items)
        rank = {name: i for i, name in enumerate(FIRST)}
        order = {}
        for index, item in enumerate(items):
            order.setdefault(groups[item][0], (rank.get(groups[item][0], len(FIRST)), index))
        items.sort(key=lambda item: order[groups[item][0]])  # stable: a group keeps its tests' order
    return (yield)


# pytest 9 ignores xdist 3.8's `@group` suffix on node ids, so `--dist loadgroup` would scatter a module's tests;
# this scheduler groups by module instead (a module's fixtures are built once), except the modules below, whose
# tests run one by one, or together where named (the tests that share an expensive module or session fixture).
SPLIT = {"Testing/test_federated.py": {},  # its Flower process tests (mostly waiting on Flower) on either worker
         "Testing/test_pipeline_real.py": {"test_single_real_ct_series_runs_end_to_end": "real_ct_run",
                                          "test_real_t2_adc_mr_study_runs_end_to_end": "real_mr_run",
                                          "test_liver_first_of_the_real_data_engine_is_its_liver_stage": "real_mr_run"},
         "Testing/test_liverlesion.py": {"test_crlm_ct_liver_is_plausible_and_lesions_are_inside": "real_ct_run",
                                         "test_mr_t2_chosen_and_liver_plausible": "real_mr_run"},
         "Testing/test_segmentation.py": {**dict.fromkeys(
             ["test_training_from_scratch_learns_liver", "test_prediction_grid_identical_for_anisotropic_and_oblique_input",
              "test_channel_count_order_and_missing_phase_are_refused", "test_memory_is_estimated_before_running",
              "test_tampered_or_unexpected_bundle_files_are_refused", "test_cli_plan_and_segment",
              "test_locate_pass_alone_and_as_seed"], "trained"),
             **dict.fromkeys(["test_tta_agrees_with_plain_and_reruns_are_identical",
                              "test_shipped_sample_model_on_new_full_size_phantoms"], "full_size")}}


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module, name = nodeid.split("::")[0], nodeid.split("::")[-1].split("[")[0].split("@")[0]
            if module in SPLIT:
                scope = SPLIT[module].get(name, nodeid)
                return scope if scope in SHARED_SESSION_FIXTURES else f"{module}::{scope}"
            return module

    return ModuleScheduling(config, log)
