"""Slicer glue shared by the HCCFusion modules (the workflow and the four per-stage modules).

Qt-free, used outside the Slicer application too (tests on the slicer-core wheel): `choices` (panel vocabulary),
`interfaces` (runner and installer protocols), `process` (runners: child process, Qt background, in-process),
`readiness` (which buttons may run), `steps` + `logic` (jobs, scene nodes). Slicer application only:
`parameters` (parameter node), `widget` (panels), `install` (pip installs).
"""
