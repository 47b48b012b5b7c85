"""Worker tasks of `extract_study` (one series; shape features of one mask) and the process pool running them.

Tasks are plain dicts of numpy arrays and geometry (masks as bounding-box crops), so they pickle cheaply to
spawned processes. The pool is started (and its modules imported) while the study loop prepares the first
series; series tasks are started as soon as the loop has prepared them. The shape tasks, largest mask first,
run in the calling process while the workers compute the series (it would otherwise wait idle): the last
series then no longer waits behind a shape task, and the processes finish close together. Inside
`use_executor(executor)` (a concurrent.futures Executor: a Dask cluster's, from a cohort task) every task goes
to that executor instead: one task per series and per shape mask, gathered into the same results.
"""
from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import SimpleITK as sitk

from ..regions import size_reason
from .cropped import preprocess_cropped
from .features import check_mask, compute_shape, image_hash, preprocess_image, preprocess_mask, series_features, \
    shape_key
from .presets import Preset, load_preset


# ---------------------------------------------------------------- packing
def pack_image(image: sitk.Image) -> dict:
    return {"array": sitk.GetArrayFromImage(image), **_geometry(image)}


def pack_mask(mask: sitk.Image) -> dict:
    """A binary mask as its bounding-box crop plus the full grid (cheap to send to a worker process)."""
    arr = sitk.GetArrayViewFromImage(mask) > 0
    lo, hi = [0, 0, 0], [0, 0, 0]
    for axis in range(3):  # the box from the mask's projections (no index arrays of every voxel)
        hit = np.flatnonzero(arr.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size:
            lo[axis], hi[axis] = int(hit[0]), int(hit[-1]) + 1
    return {"crop": arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.uint8), "lo": lo, **_geometry(mask)}


def _geometry(image: sitk.Image) -> dict:
    return {"size": image.GetSize(), "spacing": image.GetSpacing(), "origin": image.GetOrigin(),
            "direction": image.GetDirection()}


def _unpack_image(data: dict) -> sitk.Image:
    return _with_geometry(sitk.GetImageFromArray(data["array"]), data)


def _unpack_mask(data: dict) -> sitk.Image:
    arr = np.zeros(data["size"][::-1], np.uint8)
    lo, crop = data["lo"], data["crop"]
    arr[lo[0]:lo[0] + crop.shape[0], lo[1]:lo[1] + crop.shape[1], lo[2]:lo[2] + crop.shape[2]] = crop
    return _with_geometry(sitk.GetImageFromArray(arr), data)


def _blank(data: dict) -> sitk.Image:
    return _with_geometry(sitk.Image([int(s) for s in data["size"]], sitk.sitkUInt8), data)


def _with_geometry(image: sitk.Image, data: dict) -> sitk.Image:
    image.SetSpacing(data["spacing"])
    image.SetOrigin(data["origin"])
    image.SetDirection(data["direction"])
    return image


# ---------------------------------------------------------------- tasks (run in a worker process)
def series_task(task: dict, features=None) -> dict:
    """Features of one series: {"series", "preset", "threads", "image" (pack_image), "masks" {name: pack_mask}}.
    `features`: another backend's `series_features(pre, masks, preset, shapes=, defer_shapes=)` (torch_backend)."""
    if task.get("threads"):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(task["threads"])
    preset = load_preset(Preset(**task["preset"]))
    image = _unpack_image(task["image"])
    masks = {name: preprocess_mask(_unpack_mask(m), image, preset) for name, m in task["masks"].items()}
    crop = preprocess_cropped(image, masks, preset) if task.get("crop_filters") else None
    pre, masks = crop if crop is not None else (preprocess_image(image, preset), masks)
    shapes = dict(task.get("shapes") or {})
    if features is not None:
        found = features(pre, masks, preset, shapes=shapes, defer_shapes=task.get("defer_shapes", False))
    else:
        found = series_features(pre, masks, preset, shapes=shapes, defer_shapes=task.get("defer_shapes", False),
                                crop_filters=task.get("crop_filters", False))
    return {"series": task["series"], "values": found.values, "reasons": found.reasons,
            "shape_keys": found.shape_keys, "seconds": found.seconds, "shapes": shapes,
            "preprocessed_sha256": image_hash(pre), "grid": {"size": pre.GetSize(), "spacing": pre.GetSpacing()},
            "cropped": crop is not None}


def shape_task(task: dict) -> dict:
    """Shape features of masks on one grid (series of a registered study share them): {"preset", "threads",
    "grid" (geometry of the series), "masks" {any key: pack_mask}} -> {"shapes": {shape_key: features}}."""
    if task.get("threads"):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(task["threads"])
    preset = load_preset(Preset(**task["preset"]))
    image = _blank(task["grid"])
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    shapes = {}
    for name, packed in task["masks"].items():
        mask = preprocess_mask(_unpack_mask(packed), image, preset)
        m = sitk.GetArrayViewFromImage(mask) > 0
        dims = int(sum((i.max() - i.min()) > 0 for i in np.nonzero(m))) if m.any() else 0
        if size_reason(int(m.sum()), dims, "shape", name):
            continue
        try:
            bb = check_mask(mask, settings)
        except ValueError:
            continue
        key = shape_key(mask, bb)
        if key not in shapes:
            shapes[key] = compute_shape(extractor, mask, bb, settings)
    return {"shapes": shapes}


def _warm() -> None:
    """Imports a worker needs (pyradiomics and its feature classes), done before the first task arrives."""
    from .presets import pyradiomics

    pyradiomics()


# ---------------------------------------------------------------- running them
_EXECUTOR = contextvars.ContextVar("radiomics_executor", default=None)


@contextlib.contextmanager
def use_executor(executor):
    """Within the block, `extract_study` sends its series and shape tasks to `executor` (e.g. a Dask client's
    `get_executor()`), whatever its `workers`."""
    token = _EXECUTOR.set(executor)
    try:
        yield executor
    finally:
        _EXECUTOR.reset(token)


@contextlib.contextmanager
def dask_series_tasks():
    """In a task on a Dask worker (a cohort study): within the block, the study's radiomics runs as Dask tasks, one
    per series and per shape mask. Elsewhere: nothing changes."""
    try:
        from distributed import get_client, get_worker

        get_worker()
    except (ImportError, ValueError):  # not on a Dask worker: the study's own processes
        yield None
        return
    with use_executor(get_client().get_executor(pure=False)) as executor:
        yield executor


@contextlib.contextmanager
def _waiting(executor):
    """While a Dask task waits for its own sub-tasks it leaves the worker's thread pool, so they can run there."""
    if executor is None or not type(executor).__module__.startswith("distributed"):
        yield
        return
    from ..cluster import seceded

    with seceded():
        yield


class TaskRunner:
    """Runs series tasks in `workers` spawned processes and shape tasks here (1 worker: all here, shapes first,
    when `results` is called), or every task on the executor set by `use_executor`. With processes, the pool
    starts on entering; series tasks start on `add_series` and leave shared shape features to the shape tasks
    (`add_shapes`); `results` computes those while the workers run (or sends them to the executor), waits for
    the series and fills each series' shape features in."""

    def __init__(self, workers: int, progress):
        self.executor = _EXECUTOR.get()
        self.workers, self.progress = workers, progress
        self.parallel = workers > 1 or self.executor is not None
        self.series, self.shapes = {}, []
        self.pool, self.futures = None, {}
        self.series_task = series_task  # a backend's own (torch_backend.series_task_torch)

    def __enter__(self):
        if self.executor is None and self.workers > 1:  # spawning and importing overlap with the first series
            for _ in range(self.workers):
                self._target().submit(_warm)
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    @property
    def threads(self):
        """SimpleITK threads per task: one per process when processes share the cores."""
        return 1 if self.parallel else None

    def add_series(self, name: str, task: dict) -> None:
        self.series[name] = task
        if self.parallel:
            self.futures[self._target().submit(self.series_task, {**task, "defer_shapes": True})] = ("series", name)

    def add_shapes(self, group: dict) -> None:
        """One shape task per mask of `group` ({"preset", "grid", "masks"}); they run in `results`, largest first."""
        for key, packed in group["masks"].items():
            task = {**group, "threads": self.threads, "masks": {key: packed}}
            self.shapes.append(task)

    def results(self) -> dict:
        if not self.parallel:
            return self._run_here()
        from concurrent.futures import as_completed

        largest_first = sorted(self.shapes, key=lambda t: -next(iter(t["masks"].values()))["crop"].size)
        shapes, total = {}, len(self.futures) + len(self.shapes)
        if self.executor is not None:
            for task in largest_first:
                self.futures[self.executor.submit(shape_task, task)] = ("shape", None)
        else:
            threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            try:
                for done, task in enumerate(largest_first):
                    shapes.update(shape_task(task)["shapes"])
                    self.progress(done / total, "shape features")
            finally:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        results = {}
        with _waiting(self.executor):
            for done, future in enumerate(as_completed(self.futures), start=total - len(self.futures) + 1):
                kind, name = self.futures[future]
                out = future.result()
                if kind == "shape":
                    shapes.update(out["shapes"])
                else:
                    results[name] = out
                self.progress(done / total, f"features of {name}" if name else "shape features")
        for res in results.values():  # shapes a series left to the shape tasks
            for region, key in res["shape_keys"].items():
                if not any("_shape_" in k for k in res["values"][region]):
                    res["values"][region].update(shapes.get(key) or res["shapes"].get(key) or {})
        return results

    def _target(self):
        """The executor set by `use_executor`, else this runner's process pool (started on first use)."""
        if self.executor is not None:
            return self.executor
        if self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def _run_here(self) -> dict:
        shapes, results = {}, {}
        for task in self.shapes:
            shapes.update(shape_task(task)["shapes"])
        for done, (name, task) in enumerate(self.series.items()):
            self.progress(done / max(len(self.series), 1), f"features of {name}")
            results[name] = self.series_task({**task, "shapes": shapes})
        return results
