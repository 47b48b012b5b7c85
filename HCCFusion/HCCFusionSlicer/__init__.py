"""Slicer glue of the HCCFusion module: parameter node, widget, logic, background process, installer.

Only `logic.py` and `process.py` are used outside the Slicer application (tests on the slicer-core wheel);
`parameters.py`, `widget.py` and `install.py` need the full application.
"""
