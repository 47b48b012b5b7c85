"""Clinical staging from raw labs and findings: Child-Pugh, ALBI grade, BCLC stage (2022 update).

Every function takes plain values (or a `Clinical` via `stage_clinical`) and returns a result that either
holds the score/stage or says it cannot be computed, listing the missing inputs: nothing is ever guessed.

Definitions
- Child-Pugh (Pugh et al., Br J Surg 1973): 1-3 points each for total bilirubin (< 2, 2-3, > 3 mg/dL),
  albumin (> 3.5, 2.8-3.5, < 2.8 g/dL), INR (< 1.7, 1.7-2.3, > 2.3), ascites (none, mild,
  moderate-severe), hepatic encephalopathy (none, grade 1-2, grade 3-4); class A 5-6, B 7-9, C 10-15.
- ALBI (Johnson et al., J Clin Oncol 2015): 0.66 x log10(bilirubin umol/L) - 0.085 x albumin g/L;
  grade 1 <= -2.60 < grade 2 <= -1.39 < grade 3. Units: bilirubin mg/dL x 17.1 = umol/L, albumin g/dL x 10 = g/L.
- BCLC 2022 (Reig et al., J Hepatol 2022;76:681-693):
  D  end-stage liver function (taken as Child-Pugh C) or ECOG performance status 3-4;
  C  portal (macrovascular) invasion and/or extrahepatic spread, or performance status 1-2;
  0  single nodule <= 2 cm, preserved liver function, PS 0;
  A  single nodule (any size) or 2-3 nodules each <= 3 cm, PS 0;
  B  multinodular beyond A, PS 0, no vascular invasion or extrahepatic spread.
  "Each <= 3 cm" is checked on the largest lesion (`tumour_size_mm`), which bounds all others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import InputError
from .lesions import DIAMETER_COLUMN
from .study import ASCITES_LEVELS, ENCEPHALOPATHY_LEVELS

#: Clinical choice lists (study.py defines them, for the manifest check; the panel and the CLI take theirs from here).
ASCITES_POINTS = dict(zip(ASCITES_LEVELS, (1, 2, 3)))
ENCEPHALOPATHY_POINTS = dict(zip(ENCEPHALOPATHY_LEVELS, (1, 2, 3)))
ECOG_PS = (0, 1, 2, 3, 4)
BILIRUBIN_MGDL_TO_UMOLL = 17.1
CANNOT = "cannot stage"


@dataclass(frozen=True)
class ChildPugh:
    score: int | None  # 5-15
    klass: str | None  # "A" | "B" | "C"
    points: dict = field(default_factory=dict)  # input -> points
    missing: tuple = ()

    @property
    def ok(self) -> bool:
        return self.score is not None

    def __str__(self) -> str:
        return f"Child-Pugh {self.klass} ({self.score})" if self.ok else f"Child-Pugh: {CANNOT}, missing {', '.join(self.missing)}"


@dataclass(frozen=True)
class Albi:
    score: float | None
    grade: int | None  # 1 | 2 | 3
    missing: tuple = ()

    @property
    def ok(self) -> bool:
        return self.score is not None

    def __str__(self) -> str:
        return f"ALBI grade {self.grade} ({self.score:.2f})" if self.ok else f"ALBI: {CANNOT}, missing {', '.join(self.missing)}"


@dataclass(frozen=True)
class Bclc:
    stage: str | None  # "0" | "A" | "B" | "C" | "D"
    reason: str
    missing: tuple = ()

    @property
    def ok(self) -> bool:
        return self.stage is not None

    def __str__(self) -> str:
        return f"BCLC {self.stage} ({self.reason})" if self.ok else f"BCLC: {CANNOT}, missing {', '.join(self.missing)}"


def _missing(**values) -> tuple:
    return tuple(name for name, value in values.items() if _is_missing(value))


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise InputError(f"Clinical value {name}={value} is not a positive number: check the units and the entry.")
    return value


def _level(name: str, value: str, table: dict) -> int:
    key = str(value).strip().lower()
    if key not in table:
        raise InputError(f"Unknown {name} '{value}': use one of {', '.join(table)}.")
    return table[key]


def child_pugh(bilirubin_mgdl=None, albumin_gdl=None, inr=None, ascites=None, encephalopathy=None) -> ChildPugh:
    """Child-Pugh score and class from total bilirubin (mg/dL), albumin (g/dL), INR, ascites, encephalopathy."""
    missing = _missing(bilirubin=bilirubin_mgdl, albumin=albumin_gdl, inr=inr, ascites=ascites,
                       encephalopathy=encephalopathy)
    if missing:
        return ChildPugh(None, None, {}, missing)
    bili = _positive("bilirubin (mg/dL)", bilirubin_mgdl)
    alb = _positive("albumin (g/dL)", albumin_gdl)
    inr = _positive("inr", inr)
    points = {
        "bilirubin": 1 if bili < 2.0 else 2 if bili <= 3.0 else 3,
        "albumin": 1 if alb > 3.5 else 2 if alb >= 2.8 else 3,
        "inr": 1 if inr < 1.7 else 2 if inr <= 2.3 else 3,
        "ascites": _level("ascites", ascites, ASCITES_POINTS),
        "encephalopathy": _level("encephalopathy", encephalopathy, ENCEPHALOPATHY_POINTS),
    }
    score = sum(points.values())
    return ChildPugh(score, "A" if score <= 6 else "B" if score <= 9 else "C", points)


def albi(bilirubin_mgdl=None, albumin_gdl=None) -> Albi:
    """ALBI score and grade from total bilirubin (mg/dL) and albumin (g/dL), converted to umol/L and g/L."""
    missing = _missing(bilirubin=bilirubin_mgdl, albumin=albumin_gdl)
    if missing:
        return Albi(None, None, missing)
    bili_umol = _positive("bilirubin (mg/dL)", bilirubin_mgdl) * BILIRUBIN_MGDL_TO_UMOLL
    alb_gl = _positive("albumin (g/dL)", albumin_gdl) * 10.0
    score = 0.66 * math.log10(bili_umol) - 0.085 * alb_gl
    return Albi(score, 1 if score <= -2.60 else 2 if score <= -1.39 else 3)


def bclc(*, performance_status=None, child_pugh_class=None, tumour_number=None, tumour_size_mm=None,
         vascular_invasion=None, extrahepatic_spread=None) -> Bclc:
    """BCLC 2022 stage; an input that the decision needs but is missing gives "cannot stage" with the list."""
    ps, cp = performance_status, child_pugh_class
    inputs = {"performance_status": ps, "child_pugh_class": cp, "tumour_number": tumour_number,
              "tumour_size_mm": tumour_size_mm, "vascular_invasion": vascular_invasion,
              "extrahepatic_spread": extrahepatic_spread}
    cannot = Bclc(None, CANNOT, _missing(**inputs))
    if not _is_missing(ps) and int(ps) not in ECOG_PS:
        raise InputError(f"ECOG performance status {ps} is out of range: use 0-4.")
    if not _is_missing(cp) and cp not in ("A", "B", "C"):
        raise InputError(f"Child-Pugh class '{cp}' is not A, B or C.")
    if not _is_missing(cp) and cp == "C":
        return Bclc("D", "end-stage liver function (Child-Pugh C)")
    if not _is_missing(ps) and int(ps) >= 3:
        return Bclc("D", f"performance status {int(ps)}")
    if _missing(performance_status=ps, child_pugh=cp):
        return cannot
    if vascular_invasion is True or extrahepatic_spread is True:
        what = " and ".join(n for n, v in (("vascular invasion", vascular_invasion),
                                           ("extrahepatic spread", extrahepatic_spread)) if v is True)
        return Bclc("C", what)
    if int(ps) in (1, 2):
        return Bclc("C", f"performance status {int(ps)}")
    if _missing(vascular_invasion=vascular_invasion, extrahepatic_spread=extrahepatic_spread,
                tumour_number=tumour_number, tumour_size_mm=tumour_size_mm):
        return cannot
    number, size = int(tumour_number), float(tumour_size_mm)
    if number < 1 or size <= 0:
        raise InputError(f"Tumour number {number} / size {size} mm cannot be staged: BCLC needs at least one lesion.")
    if number == 1 and size <= 20.0:
        return Bclc("0", f"single nodule {size:g} mm <= 2 cm, PS 0, Child-Pugh {cp}")
    if number == 1:
        return Bclc("A", f"single nodule {size:g} mm, PS 0, Child-Pugh {cp}")
    if number <= 3 and size <= 30.0:
        return Bclc("A", f"{number} nodules <= 3 cm, PS 0, Child-Pugh {cp}")
    return Bclc("B", f"multinodular ({number} nodules, largest {size:g} mm), PS 0, Child-Pugh {cp}")


def stage_clinical(clinical) -> dict:
    """Child-Pugh, ALBI and BCLC of a `Clinical` (or a dict/Series with its field names)."""
    get = clinical.get if hasattr(clinical, "get") else lambda k: getattr(clinical, k, None)
    cp = child_pugh(get("bilirubin"), get("albumin"), get("inr"), get("ascites"), get("encephalopathy"))
    cp_class = cp.klass if cp.ok else None
    stage = bclc(performance_status=get("performance_status"), child_pugh_class=cp_class,
                 tumour_number=get("tumour_number"), tumour_size_mm=get("tumour_size_mm"),
                 vascular_invasion=_bool_or_none(get("vascular_invasion")),
                 extrahepatic_spread=_bool_or_none(get("extrahepatic_spread")))
    if not stage.ok and not cp.ok and "child_pugh_class" in stage.missing:
        stage = Bclc(None, CANNOT, tuple(m for m in stage.missing if m != "child_pugh_class") + tuple(
            f"child_pugh:{m}" for m in cp.missing))
    return {"child_pugh": cp, "albi": albi(get("bilirubin"), get("albumin")), "bclc": stage}


def tumour_burden(lesions) -> dict:
    """BCLC tumour inputs from a lesion table (`lesions.LesionTable` or its frame): `tumour_number` (rows) and
    `tumour_size_mm` (the largest `lesions.DIAMETER_COLUMN`, the 3D maximum diameter; left out without that
    column or without lesions)."""
    frame = getattr(lesions, "frame", lesions)
    burden = {"tumour_number": len(frame)}
    if DIAMETER_COLUMN in frame.columns and len(frame) and frame[DIAMETER_COLUMN].notna().any():
        burden["tumour_size_mm"] = float(frame[DIAMETER_COLUMN].max())
    return burden


def stage_with_lesions(clinical: dict, lesions=None) -> tuple[dict, dict]:
    """(clinical values, `stage_clinical` results): tumour number/size, where not given, from a lesion table."""
    values = dict(clinical)
    if lesions is not None and len(lesions):
        for key, value in tumour_burden(lesions).items():
            if values.get(key) is None:
                values[key] = value
    return values, stage_clinical(values)


def staging_frame(staging: dict) -> "pd.DataFrame":
    """The staging file's rows (system, result, score, text, missing) of `stage_clinical` results."""
    import pandas as pd

    rows = []
    for name, result in staging.items():
        value = {"child_pugh": "klass", "albi": "grade", "bclc": "stage"}[name]
        rows.append({"system": name, "result": getattr(result, value, None) or "",
                     "score": getattr(result, "score", None), "text": str(result),
                     "missing": ";".join(getattr(result, "missing", ()) or ())})
    return pd.DataFrame(rows)


def _bool_or_none(value):
    if _is_missing(value):
        return None
    if isinstance(value, str):
        key = value.strip().lower()
        if key in ("1", "true", "yes", "y"):
            return True
        if key in ("0", "false", "no", "n"):
            return False
        raise InputError(f"'{value}' is not a yes/no value (use true/false).")
    return bool(value)


def staging_table(table) -> "pd.DataFrame":
    """Per-row Child-Pugh score/class, ALBI score/grade and BCLC stage ('' + missing list when not computable)."""
    import pandas as pd

    rows = []
    for index, row in table.iterrows():
        result = stage_clinical(row.where(row.notna(), None).to_dict())
        cp, al, st = result["child_pugh"], result["albi"], result["bclc"]
        rows.append({"child_pugh_score": cp.score if cp.ok else float("nan"), "child_pugh_class": cp.klass or "",
                     "albi_score": al.score if al.ok else float("nan"),
                     "albi_grade": al.grade if al.ok else float("nan"),
                     "bclc_stage": st.stage or "", "bclc_missing": ";".join(st.missing)})
    return pd.DataFrame(rows, index=table.index)
