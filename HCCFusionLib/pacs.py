"""PACS over DICOMweb: QIDO-RS query, WADO-RS retrieve into a folder, STOW-RS store (on dicomweb-client).

Every request has a timeout; connection failures, timeouts and 408/429/5xx answers are retried a bounded
number of times with exponential backoff, then raise a PacsError that names the server and what to do.
`push` is idempotent: it asks the PACS which SOP instances of each study it already holds and sends only
the others, so re-running an interrupted push completes it without duplicates. The server is configured
by URL (argument or environment variable HCCFUSION_PACS_URL) with optional basic auth or a bearer token.
Logs carry counts, never patient identifiers.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

if TYPE_CHECKING:
    import pandas as pd

from .errors import InputError, PacsError, require
from .progress import ProgressFn, silent

log = logging.getLogger(__name__)

ENV_URL, ENV_USER, ENV_PASSWORD, ENV_TOKEN = ("HCCFUSION_PACS_URL", "HCCFUSION_PACS_USER",
                                              "HCCFUSION_PACS_PASSWORD", "HCCFUSION_PACS_TOKEN")
RETRIABLE_STATUS = {408, 429, 500, 502, 503, 504}
#: QIDO attributes shown by `query` (no patient name/ID: those stay in the PACS).
QUERY_FIELDS = {
    "studies": ["StudyInstanceUID", "StudyDate", "StudyDescription", "ModalitiesInStudy",
                "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
    "series": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"],
    "instances": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"],
}


@dataclass
class PushResult:
    """What a push did: instances sent now and instances the PACS already held (skipped)."""

    stored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Pacs:
    """A DICOMweb server (e.g. Orthanc's /dicom-web) with timeouts and bounded retries."""

    def __init__(self, url: str | None = None, *, username: str | None = None, password: str | None = None,
                 token: str | None = None, timeout: float = 30.0, retries: int = 3, backoff_s: float = 1.0,
                 batch_size: int = 16):
        self.url = (url or os.environ.get(ENV_URL) or "").rstrip("/")
        if not self.url:
            raise InputError(f"No PACS configured: pass --pacs-url URL (the DICOMweb root, e.g. "
                             f"http://host:8042/dicom-web) or set {ENV_URL}.")
        if not self.url.startswith(("http://", "https://")):
            raise InputError(f"PACS URL '{self.url}' must start with http:// or https://.")
        self.timeout, self.retries, self.backoff_s, self.batch_size = timeout, max(int(retries), 0), backoff_s, batch_size
        requests = require("requests", "dicom")
        api = require("dicomweb_client.api", "dicom")
        session = requests.Session()
        username = username or os.environ.get(ENV_USER)
        password = password or os.environ.get(ENV_PASSWORD)
        token = token or os.environ.get(ENV_TOKEN)
        if username:
            session.auth = (username, password or "")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = api.DICOMwebClient(url=self.url, session=session, headers=headers, timeout=timeout)
        self._client.set_http_retry_params(retry=False)  # retries are done (and bounded) here

    # ------------------------------------------------------------ plumbing
    def _call(self, what: str, func: Callable, *args, **kwargs):
        """Run one DICOMweb request with bounded retries; map failures to PacsError."""
        import requests

        for attempt in range(self.retries + 1):
            try:
                return func(*args, **kwargs)
            except ValueError as exc:  # dicomweb-client's own argument checks (e.g. a malformed UID)
                raise InputError(f"Invalid {what} request: {exc}") from None
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in (401, 403):
                    raise PacsError(f"PACS {self.url} refused {what} (HTTP {status}): check --pacs-user/--pacs-password "
                                    f"or --pacs-token ({ENV_USER}/{ENV_PASSWORD}/{ENV_TOKEN}).") from None
                if status not in RETRIABLE_STATUS:
                    raise PacsError(f"PACS {self.url} rejected {what} (HTTP {status}): "
                                    f"{(exc.response.text or '')[:200] if exc.response is not None else exc}") from None
                error = f"HTTP {status}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = type(exc).__name__
            if attempt < self.retries:
                delay = self.backoff_s * 2 ** attempt
                log.warning("PACS %s failed (%s); retry %d/%d in %.1f s", what, error, attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise PacsError(
            f"PACS {self.url} unreachable during {what} ({error} after {self.retries + 1} attempts, timeout "
            f"{self.timeout:g} s): check that the server is running and the URL/port is right, then run again."
        )

    # ------------------------------------------------------------ QIDO
    def query(self, level: str = "studies", *, study_uid: str | None = None, series_uid: str | None = None,
              filters: dict | None = None, limit: int | None = None) -> "pd.DataFrame":
        """QIDO-RS search at `level` ("studies", "series", "instances"); one row per match, UIDs as columns."""
        import pandas as pd

        if level not in QUERY_FIELDS:
            raise InputError(f"Query level '{level}' unknown: use one of {list(QUERY_FIELDS)}.")
        kwargs = {"fields": QUERY_FIELDS[level], "search_filters": dict(filters or {}), "limit": limit,
                  "get_remaining": limit is None}
        if level == "studies":
            found = self._call("query of studies", self._client.search_for_studies, **kwargs)
        elif level == "series":
            found = self._call("query of series", self._client.search_for_series, study_instance_uid=study_uid, **kwargs)
        else:
            found = self._call("query of instances", self._client.search_for_instances,
                               study_instance_uid=study_uid, series_instance_uid=series_uid, **kwargs)
        return pd.DataFrame([_flatten(item, QUERY_FIELDS[level]) for item in found], columns=QUERY_FIELDS[level])

    def instance_uids(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs the PACS holds for one study (empty when the study is unknown)."""
        table = self.query("instances", study_uid=study_uid)
        return set(table["SOPInstanceUID"].dropna())

    # ------------------------------------------------------------ WADO
    def pull(self, study_uid: str, folder: "str | Path", *, series_uid: str | None = None,
             progress: ProgressFn | None = None) -> list[Path]:
        """WADO-RS retrieve of a study (or one series) into a new folder: <folder>/<SeriesUID>/<SOPUID>.dcm.

        The folder appears only when every instance arrived (temporary sibling + rename).
        """
        from .files import atomic_folder

        progress = progress or silent
        series = [series_uid] if series_uid else list(self.query("series", study_uid=study_uid)["SeriesInstanceUID"])
        if not series:
            raise PacsError(f"PACS {self.url} holds no study {study_uid}: check the StudyInstanceUID "
                            "(`hccfusion pacs query` lists the studies).")
        written = []
        with atomic_folder(folder) as tmp:
            for i, uid in enumerate(series):
                progress(i / len(series), f"retrieving series {i + 1}/{len(series)}")
                datasets = self._call("retrieve", self._client.retrieve_series, study_uid, uid)
                (tmp / uid).mkdir()
                for ds in datasets:
                    name = f"{ds.SOPInstanceUID}.dcm"
                    ds.save_as(tmp / uid / name, enforce_file_format=True)
                    written.append(Path(folder) / uid / name)
        progress(1.0, f"retrieved {len(written)} instances")
        log.info("Retrieved %d instance(s) in %d series", len(written), len(series))
        return written

    # ------------------------------------------------------------ STOW
    def push(self, paths: "str | Path | Iterable[str | Path]", *, progress: ProgressFn | None = None) -> PushResult:
        """STOW-RS store of DICOM files (files or folders, recursive), skipping instances the PACS already holds.

        Local files are only read. On failure a PacsError says how many instances were stored; running the
        same push again sends only the rest.
        """
        import pydicom

        progress = progress or silent
        files = _dicom_files(paths)
        headers = {}
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                headers[f] = (str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
            except Exception as exc:
                raise InputError(f"'{f}' is not a readable DICOM instance ({exc}): remove it from the push.") from None
        result = PushResult()
        present = {study: self.instance_uids(study) for study in sorted({s for s, _ in headers.values()})}
        todo, seen = [], set()
        for f, (study, sop) in headers.items():
            if sop in present[study]:
                result.skipped.append(sop)
            elif sop not in seen:  # the same instance twice in the input is sent once
                todo.append(f)
                seen.add(sop)
        total = len(todo) + len(result.skipped)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            progress((len(result.stored) + len(result.skipped)) / total, f"storing {len(result.stored) + len(batch)}"
                     f"/{len(todo)}")
            try:
                self._store(batch, headers)
            except PacsError as exc:
                raise PacsError(f"{exc} Stored {len(result.stored)} of {len(todo)} new instance(s) before the failure "
                                "(local files untouched); the same push sends only the rest.") from None
            result.stored += [headers[f][1] for f in batch]
        progress(1.0, f"stored {len(result.stored)}, already present {len(result.skipped)}")
        log.info("Pushed %d instance(s); %d already present", len(result.stored), len(result.skipped))
        return result

    def _store(self, batch: list[Path], headers: dict) -> None:
        import pydicom

        datasets = [pydicom.dcmread(f) for f in batch]
        by_study: dict[str, list] = {}
        for f, ds in zip(batch, datasets):
            by_study.setdefault(headers[f][0], []).append(ds)
        for study, group in by_study.items():
            response = self._call("store", self._client.store_instances, group, study_instance_uid=study)
            failed = list(getattr(response, "FailedSOPSequence", []) or [])
            if failed:
                reasons = sorted({int(item.get("FailureReason", 0)) for item in failed})
                raise PacsError(f"PACS {self.url} refused {len(failed)} instance(s) (failure reason {reasons}): "
                                "check the files are valid DICOM the server accepts.")


def _flatten(item: dict, keys: Sequence[str]) -> dict:
    """DICOM JSON (tag -> {"vr", "Value"}) to plain values for the named keywords."""
    from pydicom.datadict import tag_for_keyword

    row = {}
    for key in keys:
        element = item.get(f"{tag_for_keyword(key):08X}") or {}
        values = element.get("Value") or [None]
        value = values if len(values) > 1 else values[0]
        row[key] = "\\".join(map(str, value)) if isinstance(value, list) else value
    return row


def _dicom_files(paths) -> list[Path]:
    """Files given explicitly, plus the DICOM files found (recursively) in given folders."""
    from pydicom.misc import is_dicom

    if isinstance(paths, (str, Path)):
        paths = [paths]
    files, ignored = [], 0
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            files += [f for f in found if is_dicom(f)]
            ignored += len(found) - sum(is_dicom(f) for f in found)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"'{p}' does not exist: give DICOM files or folders to push.")
    if ignored:
        log.warning("Push ignores %d non-DICOM file(s) in the given folder(s)", ignored)
    if not files:
        raise InputError(f"Nothing to push: {', '.join(map(str, paths))} holds no DICOM files.")
    return files
