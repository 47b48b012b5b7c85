"""Worker tasks of `extract_study` (one series; shape features of one mask) and the process pool running them.

Tasks are plain dicts of numpy arrays and geometry (masks as bounding-box crops), so they pickle cheaply to
spawned processes. The pool is started (and its modules imported) while the study loop prepares the first
series; series tasks are started as soon as the loop has prepared them. The shape tasks, largest mask first,
run in the calling process while the workers compute the series (it would otherwise wait idle): the last
series then no longer waits behind a shape task, and the processes finish close together.
"""
from __future__ import annotations

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
def series_task(task: dict) -> dict:
    """Features of one series: {"series", "preset", "threads", "image" (pack_image), "masks" {name: pack_mask}}."""
    if task.get("threads"):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(task["threads"])
    preset = load_preset(Preset(**task["preset"]))
    image = _unpack_image(task["image"])
    masks = {name: preprocess_mask(_unpack_mask(m), image, preset) for name, m in task["masks"].items()}
    crop = preprocess_cropped(image, masks, preset) if task.get("crop_filters") else None
    pre, masks = crop if crop is not None else (preprocess_image(image, preset), masks)
    shapes = dict(task.get("shapes") or {})
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
class TaskRunner:
    """Runs series tasks in `workers` spawned processes and shape tasks here (1 worker: all here, shapes first,
    when `results` is called). With processes, the pool starts on entering; series tasks start on `add_series`
    and leave shared shape features to the shape tasks (`add_shapes`); `results` computes those while the workers
    run, waits for the series and fills each series' shape features in."""

    def __init__(self, workers: int, progress):
        self.workers, self.progress = workers, progress
        self.series, self.shapes = {}, []
        self.pool, self.futures = None, {}

    def __enter__(self):
        if self.workers > 1:  # spawning and importing overlap with the preparation of the first series
            for _ in range(self.workers):
                self._pool().submit(_warm)
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    @property
    def threads(self):
        """SimpleITK threads per task: one per process when processes share the cores."""
        return 1 if self.workers > 1 else None

    def add_series(self, name: str, task: dict) -> None:
        self.series[name] = task
        if self.workers > 1:
            self.futures[self._pool().submit(series_task, {**task, "defer_shapes": True})] = name

    def add_shapes(self, group: dict) -> None:
        """One shape task per mask of `group` ({"preset", "grid", "masks"}); they run in `results`, largest first."""
        for key, packed in group["masks"].items():
            task = {**group, "threads": self.threads, "masks": {key: packed}}
            self.shapes.append(task)

    def results(self) -> dict:
        if self.workers <= 1:
            return self._run_here()
        from concurrent.futures import as_completed

        shapes, total = {}, len(self.futures) + len(self.shapes)
        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        try:
            largest_first = sorted(self.shapes, key=lambda t: -next(iter(t["masks"].values()))["crop"].size)
            for done, task in enumerate(largest_first):
                shapes.update(shape_task(task)["shapes"])
                self.progress(done / total, "shape features")
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        results = {}
        for done, future in enumerate(as_completed(self.futures), start=len(self.shapes) + 1):
            name = self.futures[future]
            results[name] = future.result()
            self.progress(done / total, f"features of {name}")
        for res in results.values():  # shapes a series left to the shape tasks
            for region, key in res["shape_keys"].items():
                if not any("_shape_" in k for k in res["values"][region]):
                    res["values"][region].update(shapes.get(key) or res["shapes"].get(key) or {})
        return results

    def _pool(self):
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
            results[name] = series_task({**task, "shapes": shapes})
        return results
