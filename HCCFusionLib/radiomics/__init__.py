"""Radiomics per series × region on pyradiomics, with kinetic features, deltas and stability screening.

Pipeline of `extract_study` (`extraction`) for every series (CT phase, MRI sequence, PET):

1. label map: the `segmentation` given (on the series grid, or resampled to it with nearest neighbour when
   `resample_masks=True`), else the series' own ``masks["labels"]``; regions from `regions.build_regions`.
2. preprocessing once per series, by the modality's versioned preset (`presets`, ``HCCFusionLib/presets/*.yaml``).
   Mode ``ibsi`` (`ibsi`; new presets, e.g. ``ibsi1_ct_a`` … ``ibsi1_ct_e``): IBSI-1 grid (centres aligned),
   image and mask interpolation with a partial-volume threshold, CT rounding, range and outlier re-segmentation,
   IBSI discretisation, 3D or 2.5D texture. Mode ``legacy`` (the v1 presets, and any preset without a mode):
   optional z-score normalisation (pyradiomics' `normalizeImage`) and resampling of the whole series to the preset
   spacing (B-spline; masks nearest neighbour). pyradiomics itself then runs without resampling, so each filter sees
   the whole (preprocessed) series instead of a crop padded by a few voxels.
3. features (`features`), exactly as `RadiomicsFeatureExtractor.execute(image, region_mask)` would give them (the
   "naive loop", `naive_extract`), but faster (`series_features`): filters once per series, crops per region, one
   grey-level discretisation per (image type, region), shape features once per distinct mask; series run in
   parallel processes (`parallel`); results are cached by content hash (image, mask, preset, versions).

Failures never stop the run: an empty, one-voxel, flat or too small region, a mask on another grid, NaN in the
image, or a feature pyradiomics cannot define give NaN values with a `reason` in the long table.

Outputs (`Extraction.save(OUT)` → ``OUT/radiomics/``): ``features_long.csv`` (study, series, phase, modality,
region, image_type, feature_class, feature, value, reason), ``features_wide.csv`` (one row per study, columns
``<phase>__<region>__<imagetype>_<class>_<feature>`` plus kinetic columns ``<phase>__<region>__kinetic_<name>``),
``kinetics.csv``, ``definitions.csv`` and ``diagnostics.json``. Also: kinetic features and deltas (`kinetics`),
stability screening by ICC(3,1) (`stability`) and cohort extraction with resume (`cohort`).
"""
from . import ibsi
from .cohort import cohort_extract
from .extraction import LONG_COLUMNS, Extraction, extract_study, outputs_complete, write_outputs
from .features import (CROP_TOLERANCE, SeriesFeatures, bin_flips, image_hash, max_relative_difference,
                       naive_extract, naive_series_features, preprocess_image, preprocess_mask, series_features)
from .kinetics import (KINETIC_DEFINITIONS, PHASE_PAIRS, definitions_table, kinetic_features, phase_deltas,
                       region_statistics, timepoint_deltas)
from .presets import (CACHE_VERSION, DEFAULT_IMAGE_TYPE_ARGS, DEFAULT_PRESETS, IMAGE_TYPES, PRESET_DIR, Preset,
                      available_presets, column_name, expected_keys, feature_names, image_type_names, load_preset,
                      preset_for, versions)
from .stability import PERTURBATIONS, icc_3_1, perturb, stability_screen, stability_subjects

__all__ = [
    "CACHE_VERSION", "CROP_TOLERANCE", "DEFAULT_IMAGE_TYPE_ARGS", "DEFAULT_PRESETS", "IMAGE_TYPES", "KINETIC_DEFINITIONS", "LONG_COLUMNS",
    "PERTURBATIONS", "PHASE_PAIRS", "PRESET_DIR", "Extraction", "Preset", "SeriesFeatures", "available_presets",
    "cohort_extract", "ibsi", "column_name", "definitions_table", "expected_keys", "extract_study", "feature_names",
    "icc_3_1", "image_hash", "image_type_names", "kinetic_features", "load_preset", "max_relative_difference",
    "bin_flips", "naive_extract", "naive_series_features", "outputs_complete", "perturb", "phase_deltas",
    "preprocess_image",
    "preprocess_mask", "preset_for", "region_statistics", "series_features", "stability_screen", "stability_subjects",
    "timepoint_deltas", "versions", "write_outputs",
]
