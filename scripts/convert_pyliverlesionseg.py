"""Convert the two trained Keras U-Nets of PyPI pyliverlesionseg 0.3 into HCCFusion bundles.

    python scripts/convert_pyliverlesionseg.py WHEEL [OUT_MODELS_DIR]   # default: HCCFusionLib/models

WHEEL is pyliverlesionseg-0.3-py3-none-any.whl, fetched with
`pip download --no-deps --python-version 3.6 --only-binary=:all: pyliverlesionseg==0.3` (`make .cache/...`
does this); its SHA-256 must be the pinned one. The wheel is read as a zip (nothing is installed or
imported from it); each HDF5 weight file is read with h5py (no TensorFlow, Keras or pickle). Every HDF5
weight is used exactly once and every torch parameter is filled, else the conversion fails. Writes
liverlesion_liver/ and liverlesion_lesion/ (weights float32 safetensors) with SHA-256 checksums.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import logging
import sys
import zipfile
from pathlib import Path

import numpy as np

WHEEL_NAME = "pyliverlesionseg-0.3-py3-none-any.whl"
WHEEL_SHA256 = "ffe1576aefff5922ea8d1cfa2c50864cda97798798559542b9517689fd290cb8"
PACKAGE = "pyliverlesionseg 0.3 (PyPI)"
HOMEPAGE = "https://github.com/KUL-recon-lab/pyliverlesionseg"
PAPER = ("Tang X, et al. Whole liver segmentation based on deep learning and manual adjustment for clinical use "
         "in SIRT. European Journal of Nuclear Medicine and Molecular Imaging 47, 2020. "
         "https://link.springer.com/article/10.1007/s00259-020-04800-3 (as cited in the wheel's METADATA)")
COPYRIGHT = ("Xikai Tang and Georg Schramm (KU Leuven), the authors named in the wheel's METADATA; the wheel's "
             "LICENSE is the Apache License 2.0 text with its copyright line left as the template "
             "'Copyright [yyyy] [name of copyright owner]'")
TRAINING = {
    "liver": ("CT and MR images with ground-truth whole-liver segmentations (the package does not name the data "
              "source); its training script defaults to 196 cases: 169 training (0..168), 27 validation "
              "(169..195); cropped, resampled to 3 mm isotropic, output segment 163 x 136 x 136"),
    "lesion": ("CT and MR images with ground-truth liver-lesion segmentations (source not named in the package); "
               "the package README's lesion training "
               "command uses 180 cases: 145 training, 35 validation; resampled to 1 x 1 x 3 mm, liver-masked, "
               "output segment 92 x 84 x 42"),
}
LABELS = {"liver": {"background": 0, "liver": 1}, "lesion": {"background": 0, "lesion": 1}}
RESEARCH_USE = ("Research use only: not a medical device, not for clinical decisions. Ported weights of a "
                "published model; check its output on your own data.")
NOTICE = """## NOTICE (Apache License 2.0)

This bundle contains the weights of a trained model from pyliverlesionseg 0.3
({homepage}), by Xikai Tang and Georg Schramm (KU Leuven), licensed under the
Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0). The pyliverlesionseg
wheel ships no NOTICE file; its LICENSE is the Apache License 2.0 text.

Modifications: the Keras HDF5 weights ({hdf5}) were converted by HCCFusion's
scripts/convert_pyliverlesionseg.py to a PyTorch state dict (kernels transposed from
(kx, ky, kz, in, out) to (out, in, kx, ky, kz); values unchanged, float32) and stored as safetensors.

Distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
implied. See the License for the specific language governing permissions and limitations
under the License.
"""

log = logging.getLogger("convert_pyliverlesionseg")


#: What segmentation.domain checks: real CT/MR of whole livers. The package publishes no training volumes; the
#: lower liver bound is adult anatomy (a whole liver is rarely under 700 ml), so half of it fails QC.
DOMAIN = {"modality": ["CT", "MR"], "synthetic": False, "liver_ml": [700.0, 3000.0],
          "cases": "clinical CT and MR of SIRT patients (Tang et al. 2020); liver_ml from adult anatomy"}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_wheel(wheel: Path) -> dict:
    """{"sha256", "metadata", "hdf5": {kind: (name, bytes)}} from the wheel, after checking its SHA-256."""
    from HCCFusionLib.errors import IntegrityError, InputError
    from HCCFusionLib.files import sha256_file
    from HCCFusionLib.segmentation.liverlesion_models import MODELS

    if not wheel.is_file():
        raise InputError(f"Wheel '{wheel}' not found: fetch it with `make .cache/{WHEEL_NAME}`.")
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise IntegrityError(f"Wheel '{wheel}' has SHA-256 {digest}, expected {WHEEL_SHA256}: re-download it.")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read("pyliverlesionseg-0.3.dist-info/METADATA").decode()
        hdf5 = {kind: (spec["hdf5"], zf.read(f"pyliverlesionseg/trained_models/{spec['hdf5']}"))
                for kind, spec in MODELS.items()}
    return {"sha256": digest, "metadata": metadata, "hdf5": hdf5}


def hdf5_state_dict(data: bytes, config: dict) -> tuple[dict, list]:
    """(torch state dict, voxel size) from a Keras weight file; strict one-to-one mapping."""
    import h5py
    import torch

    from HCCFusionLib.errors import ModelError
    from HCCFusionLib.segmentation.unet_generalized import build_unet, conv_specs

    with h5py.File(io.BytesIO(data), "r") as f:
        datasets = {}
        f.visititems(lambda name, obj: datasets.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        declared = {name: [w.decode() for w in f[name].attrs["weight_names"]]
                    for name in (n.decode() for n in f.attrs["layer_names"])}
    voxel_size = [float(v) for v in datasets.pop("header/voxel_size")]
    state, used = {}, set()
    for spec in conv_specs(config):
        name = spec["name"]
        if declared.get(name) != [f"{name}/kernel:0", f"{name}/bias:0"]:
            raise ModelError(f"HDF5 layer {name}: weights {declared.get(name)}, expected kernel and bias.")
        kernel, bias = datasets[f"{name}/{name}/kernel:0"], datasets[f"{name}/{name}/bias:0"]
        want = (*spec["kernel"], spec["in"], spec["out"])
        if kernel.shape != want or bias.shape != (spec["out"],) or kernel.dtype != np.float32:
            raise ModelError(f"HDF5 {name}: kernel {kernel.shape} {kernel.dtype}, expected {want} float32.")
        state[f"convs.{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))
        state[f"convs.{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
        used |= {f"{name}/{name}/kernel:0", f"{name}/{name}/bias:0"}
    unused = sorted(set(datasets) - used)
    with_weights = sorted(n for n, w in declared.items() if w)
    if unused or with_weights != sorted(s["name"] for s in conv_specs(config)):
        raise ModelError(f"HDF5 weights not mapped: {unused}; layers with weights: {with_weights}.")
    net = build_unet(config)
    expected = set(net.state_dict())
    if expected != set(state):
        raise ModelError(f"State dict mismatch: missing {sorted(expected - set(state))}, "
                         f"extra {sorted(set(state) - expected)}.")
    return state, voxel_size


def convert(wheel: "str | Path", out_dir: "str | Path") -> dict:
    """Write both bundles; returns {kind: bundle folder}."""
    import torch

    from HCCFusionLib import __version__
    from HCCFusionLib.segmentation.bundle import load_bundle, save_bundle
    from HCCFusionLib.segmentation.liverlesion_models import MODELS
    from HCCFusionLib.segmentation.unet_generalized import build_unet, grid_plan

    source = read_wheel(Path(wheel))
    folders = {}
    for kind, spec in MODELS.items():
        hdf5_name, data = source["hdf5"][kind]
        state, voxel_size = hdf5_state_dict(data, spec["network"])
        net = build_unet(spec["network"])
        net.load_state_dict(state, strict=True)
        grid = grid_plan(spec["network"], spec["output_segment_size"])
        plans = {
            "version": 1, "architecture": "unet_generalized", "axes": "xyz", "voxel_order": "RAS",
            "channels": ["image"], "modalities": ["CT or MR"], "labels": LABELS[kind],
            "network": spec["network"], "input_segment_size": grid["input_size"],
            "output_segment_size": grid["output_size"], "align_pools": grid["align_pools"],
            "center_sampling": spec["center_sampling"], "target_spacing": voxel_size,
            "output": "one channel: sigmoid probability of the foreground label",
            "preprocessing": spec["preprocessing"], "postprocessing": spec["postprocessing"],
        }
        dataset = {"channels": [{"name": "image", "modality": "CT or MR"}], "labels": LABELS[kind],
                   "axes": "xyz", "voxel_order": "RAS", "training_data": TRAINING[kind]}
        card = {
            "name": f"liverlesion_{kind}",
            "task": spec["task"],
            "modality": ["CT", "MR"],
            "input_spacing_mm": voxel_size,
            "source": {"package": PACKAGE, "homepage": HOMEPAGE, "wheel": WHEEL_NAME,
                       "wheel_sha256": source["sha256"], "hdf5_file": f"pyliverlesionseg/trained_models/{hdf5_name}",
                       "hdf5_sha256": sha256_bytes(data)},
            "licence": "Apache-2.0",
            "copyright": COPYRIGHT,
            "paper": PAPER,
            "training_data": TRAINING[kind],
            "domain": DOMAIN,
            "conversion": {"script": "scripts/convert_pyliverlesionseg.py", "hccfusion": __version__,
                           "torch": torch.__version__, "weights": "float32, values unchanged"},
        }
        folder = save_bundle(Path(out_dir) / f"liverlesion_{kind}", plans, dataset, net, card,
                             intended_use=RESEARCH_USE, notice=NOTICE.format(homepage=HOMEPAGE, hdf5=hdf5_name))
        load_bundle(folder)
        folders[kind] = folder
        log.info("%s: %s -> %s", kind, hdf5_name, folder)
    return folders


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("out_dir", type=Path, nargs="?",
                        default=Path(__file__).resolve().parents[1] / "HCCFusionLib" / "models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for kind, folder in convert(args.wheel, args.out_dir).items():
        print(f"{kind}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
