"""MRML bridge: SimpleITK images, label maps, tables and transforms ↔ Slicer scene nodes.

The only library module that imports `slicer`/`vtk`. It uses MRML classes and module logics only, so it
behaves the same inside the Slicer application (where `new_scene()` returns `slicer.mrmlScene`) and
headless on the `slicer-core` wheel (where `new_scene()` builds the application/module logics a scene
needs to load and save data).

Coordinates: SimpleITK/ITK work in LPS, MRML in RAS; every conversion here flips x and y. A SimpleITK
transform that maps points of a fixed (reference) frame into a moving frame is ITK's file transform,
which is MRML's "transform from parent": placing the moving volume under that node aligns it to the
fixed volume.

Modules: `nodes` (scenes, terminology, attribute names), `volumes`, `segmentations`, `tables`, `transforms`,
`bundles` (studies in a scene, .mrb files); each imports only earlier ones.
"""
from .nodes import (CHANNELS_ATTRIBUTE, DTYPE_PROPERTY, INDEX_ATTRIBUTE, LABEL_VALUE_TAG, LINEAR_TRANSFORMS,
                    LPS_TO_RAS, SEGMENTS, SegmentInfo, in_slicer_app, module_logic, new_scene, terminology_string)
from .volumes import channel_names, ijk_to_ras, image_to_volume, np_matrix, set_image_data, volume_to_image, vtk_matrix
from .segmentations import labels_to_segmentation, segment_label_values, segmentation_to_labels
from .tables import dataframe_to_table, table_plot, table_to_dataframe
from .transforms import harden, node_to_transform, transform_to_node
from .bundles import CT_WINDOW, add_study, load_scene_mrb, place_in_study, save_scene_mrb

__all__ = ["CHANNELS_ATTRIBUTE", "CT_WINDOW", "DTYPE_PROPERTY", "INDEX_ATTRIBUTE", "LABEL_VALUE_TAG",
           "LINEAR_TRANSFORMS", "LPS_TO_RAS", "SEGMENTS", "SegmentInfo", "add_study", "channel_names",
           "dataframe_to_table", "harden", "ijk_to_ras", "image_to_volume", "in_slicer_app", "labels_to_segmentation",
           "load_scene_mrb", "module_logic", "new_scene", "node_to_transform", "np_matrix", "place_in_study",
           "save_scene_mrb", "segment_label_values", "segmentation_to_labels", "set_image_data", "table_plot",
           "table_to_dataframe", "terminology_string", "transform_to_node", "volume_to_image", "vtk_matrix"]
