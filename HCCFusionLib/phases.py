"""Phase / sequence detection: from DICOM headers, from file names, and by acquisition order.

`detect_phase(datasets)` reads one series' headers: Modality, ImageType, diffusion b-values (standard, GE
and Siemens private tags), SeriesDescription/ProtocolName keywords (English and common vendor/German terms),
contrast-bolus tags with the acquisition time, and MR echo/repetition times. Every answer comes with a
confidence (0..1) and a human-readable reason, stored by `io.load_study` in `Series.meta`.
"""
from __future__ import annotations

import contextlib
import logging
import re

import SimpleITK as sitk

from .errors import InputError
from .study import Phase, Series

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[^\W_]+")
# (phase, exact tokens, token prefixes, regular expressions on the upper-case text)
_CT_RULES = [
    (Phase.NC, {"NC", "NCCT", "PLAIN", "PRE", "UNENHANCED", "NONCONTRAST", "NONENHANCED", "PRECONTRAST", "WO"},
     ("NATIV", "PRECONT", "UNENH", "NONCONT", "NONENH"),
     (r"\bC\s*-(?![A-Z0-9])", r"\bW/O\b", r"\bWITHOUT\b", r"\bNON[\s-]*(CONTRAST|ENHANCED)", r"\bNO\s+CONTRAST")),
    (Phase.AP, {"HAP", "LAP", "EAP", "ARTERIAL"}, ("ART",), (r"\bLATE\s+ART",)),
    (Phase.PVP, {"PV", "PVP", "PORTAL"}, ("PORT", "VENO", "VENÖ"), ()),
    (Phase.DP, {"DP", "DELAYED", "EQ", "TRANSITIONAL"}, ("DELAY", "EQUIL", "SPAET", "SPÄT"),
     (r"\b([3-9]|10)\s*MIN",)),
]
_LATE = {"LATE", "SPAT"}
_CONTRAST_TEXT = (r"\bC\s*\+", r"\+\s*C\b", r"\bW/\s*(C|CONTRAST|IV)\b", r"\bWITH\s+(IV\s+)?CONTRAST",
                  r"\bPOST\b", r"\bGD\b", r"\bKM\b", r"\bENHANCED\b", r"\bEOB\b")
_MR_RULES = [  # checked in this order
    (Phase.ADC, {"ADC"}, (), (r"APPARENT\s+DIFF",)),
    (Phase.DWI, {"DWI", "DWIBS", "TRACE", "DW"}, ("DIFF",), (r"\bB\s*=?\s*[1-9]\d{1,3}\b",)),
    (Phase.HBP, {"HBP", "HB"}, ("HEPATOBIL", "HEPATOCYT"), (r"\b(1[5-9]|2\d)\s*MIN",)),
    (Phase.MR_PRE, {"PRE", "PRECONTRAST", "NATIVE", "UNENHANCED", "MASK"}, ("PRECONT", "NATIV", "UNENH"),
     (r"\bNON[\s-]*(CONTRAST|ENHANCED)",)),
    (Phase.MR_AP, {"HAP", "LAP", "EAP", "ARTERIAL"}, ("ART",), ()),
    (Phase.MR_PVP, {"PV", "PVP", "PORTAL"}, ("PORT", "VENO"), ()),
    (Phase.TP, {"TP", "DELAYED", "TRANSITIONAL", "EQ"}, ("DELAY", "EQUIL", "TRANSIT"), (r"\b([2-9]|10)\s*MIN",)),
    (Phase.DCE, {"DCE", "DYN", "DYNAMIC"}, (), (r"\b1\s*MIN",)),
    (Phase.T2, {"HASTE", "SSFSE", "SSTSE", "STIR", "T2"}, ("T2",), ()),
    (Phase.T1, {"VIBE", "LAVA", "THRIVE", "DIXON", "FLASH", "SPGR", "GRE", "FL3D", "OPP", "INPHASE", "T1"},
     ("T1",), (r"\bIN\s*PHASE", r"OPPOSED")),
]
#: ContrastBolusAgent words of a hepatobiliary (gadoxetate) agent.
HEPATOBILIARY_AGENTS = ("EOB", "PRIMOVIST", "EOVIST", "GADOXET")
#: MR rules used on file names (dynamic phase words of a file name are read as CT phases first).
_MR_NAME_RULES = ([r for r in _MR_RULES if r[0] in (Phase.ADC, Phase.DWI, Phase.HBP)],
                  [r for r in _MR_RULES if r[0] in (Phase.T2, Phase.T1)])
_MR_DYNAMIC_KEYWORDS = (Phase.MR_AP, Phase.MR_PVP, Phase.TP, Phase.DCE)
#: Seconds after an MR bolus: arterial < 50 s, portal venous < 150 s, transitional/delayed < 15 min, then HBP.
_MR_TIMING = ((0.0, Phase.MR_PRE), (50.0, Phase.MR_AP), (150.0, Phase.MR_PVP), (900.0, Phase.TP),
              (float("inf"), Phase.HBP))
_NO_AGENT = {"", "NONE", "NO", "N/A", "NA", "0", "NIL", "WITHOUT"}
#: End of the reason given to contrast CT series without keyword or timing (refined by acquisition order).
UNTIMED_CONTRAST = "no phase keyword or timing: assumed portal venous"
#: Reason given to CT series without contrast tags or keyword.
NO_CONTRAST_TAGS = "no contrast tags and no phase keyword: assumed non-contrast"
#: Tag answers at or below this confidence are settled by the image (`combine_with_image`).
WEAK_TAGS = 0.5
#: Seconds after bolus start: late arterial ~35-45 s, portal venous ~60-90 s, delayed 3-5 min.
_TIMING = ((50.0, Phase.AP), (150.0, Phase.PVP), (float("inf"), Phase.DP))


def _match(rules, text: str) -> list[tuple[int, Phase, str]]:
    """(position, phase, matched word) for every rule hit in `text` (upper case), in text order."""
    hits = []
    for phase, exact, prefixes, patterns in rules:
        for m in _TOKEN.finditer(text):
            tok = m.group()
            if tok in exact or tok.startswith(prefixes):
                hits.append((m.start(), phase, tok))
        for pattern in patterns:
            hits.extend((m.start(), phase, m.group().strip()) for m in re.finditer(pattern, text))
    return sorted(hits, key=lambda hit: hit[0])


def _keyword_phase(rules, *texts: str, by_rule_order: bool = False) -> tuple[Phase, str] | None:
    """Phase named in the first of `texts` that names one: its first word in the text (CT) or the first
    matching rule (MR, `by_rule_order`). For CT a bare "late" means delayed only without another phase word.
    """
    for text in texts:
        text = text.upper()
        hits = _match(rules, text)
        if by_rule_order:
            hits.sort(key=lambda hit: [r[0] for r in rules].index(hit[1]))
        if not hits and rules is _CT_RULES:
            hits = [(m.start(), Phase.DP, m.group()) for m in _TOKEN.finditer(text) if m.group() in _LATE]
        if hits:
            return hits[0][1], hits[0][2]
    return None


def _texts(ds) -> list[str]:
    """SeriesDescription, then ProtocolName (the description wins when both name a phase)."""
    return [str(ds.get(k)) for k in ("SeriesDescription", "ProtocolName") if str(ds.get(k) or "").strip()]


def _contrast_named(texts: list[str]) -> bool:
    return any(re.search(p, text.upper()) for p in _CONTRAST_TEXT for text in texts)


def _has_contrast_agent(ds) -> bool:
    agent = str(ds.get("ContrastBolusAgent") or "").strip().upper()
    return agent not in _NO_AGENT or bool(str(ds.get("ContrastBolusStartTime") or "").strip())


def _iv_route(ds) -> bool:
    """ContrastBolusRoute names an intravenous route ("IV", "Oral & IV", "intravenous")."""
    route = str(ds.get("ContrastBolusRoute") or "").upper()
    return "IV" in _TOKEN.findall(route) or "INTRAVEN" in route


def _seconds(value) -> float | None:
    """DICOM TM ("HHMMSS.frac") as seconds since midnight."""
    text = str(value or "").strip()
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hh, mm, ss = int(text[0:2]), int(text[2:4] or 0), float(text[4:] or 0)
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


def acquisition_seconds(datasets) -> float | None:
    times = [_seconds(ds.get("AcquisitionTime") or ds.get("ContentTime")) for ds in datasets]
    times = [t for t in times if t is not None]
    if times:
        return min(times)
    return _seconds(datasets[0].get("SeriesTime"))


def b_value(ds) -> float | None:
    """Diffusion b-value from the standard tag or the GE (0043,1039) / Siemens (0019,100c) private tags."""
    value = ds.get("DiffusionBValue")
    if value is not None and str(value).strip() != "":
        return float(value)
    for tag in ((0x0043, 0x1039), (0x0019, 0x100C)):
        if tag in ds:
            raw = ds[tag].value
            if isinstance(raw, bytes):
                raw = raw.decode("ascii", "ignore").strip("\x00 ").split("\\")
            if not isinstance(raw, (str, int, float)) and len(raw):
                raw = raw[0]
            with contextlib.suppress(TypeError, ValueError):
                return float(str(raw).strip()) % 100000  # GE adds 1e9 to flag the b-value
    return None


def detect_phase(datasets) -> tuple[Phase, float, str]:
    """Phase of one series from its DICOM headers: (phase, confidence 0..1, reason).

    Uses Modality, ImageType, diffusion b-values, SeriesDescription/ProtocolName keywords (English and
    common vendor/German terms), ContrastBolusAgent/ContrastBolusStartTime with the acquisition time, and
    for MR the echo/repetition times. A contrast CT with neither keyword nor timing is returned as PVP with
    low confidence; `load_study` refines such series by acquisition order within the study.
    """
    ds = datasets[0]
    modality = str(ds.get("Modality") or "").upper()
    texts = _texts(ds)
    if modality == "PT":
        return Phase.PET, 1.0, "Modality PT"
    if modality == "US":
        return Phase.CEUS, 0.6, "Modality US (assumed contrast-enhanced ultrasound)"
    if modality == "MR":
        return _detect_mr(datasets, texts)
    if modality != "CT":
        raise InputError(f"Series '{ds.get('SeriesDescription') or ds.get('SeriesNumber') or '?'}' has modality '{modality}': HCCFusion reads CT, MR, PET and US.")
    return _detect_ct(datasets, texts)


def _detect_mr(datasets, texts: list[str]) -> tuple[Phase, float, str]:
    ds = datasets[0]
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "ADC" in image_type:
        return Phase.ADC, 0.95, "ImageType ADC"
    b_values = {b for b in (b_value(d) for d in datasets) if b is not None}
    found = _keyword_phase(_MR_RULES, *texts, by_rule_order=True)
    if found and found[0] is Phase.ADC:
        return Phase.ADC, 0.9, f"description keyword '{found[1]}'"
    if any(b > 0 for b in b_values):
        return Phase.DWI, 0.95, f"diffusion b-value(s) {sorted(int(b) for b in b_values)}"
    contrast = _has_contrast_agent(ds) or _contrast_named(texts)
    if found and found[0] is Phase.DCE and _bolus_delay(datasets) is not None:
        return _post_contrast_mr(datasets, found)  # a generic dynamic keyword: the timing names the phase
    if found and not (found[0] is Phase.T1 and contrast):
        return found[0], 0.9, f"description keyword '{found[1]}'"
    if contrast:
        return _post_contrast_mr(datasets, found)
    te, tr = (float(ds.get(k)) if ds.get(k) not in (None, "") else None for k in ("EchoTime", "RepetitionTime"))
    raw = ds.get("ScanningSequence") or []
    sequence = "\\".join([raw] if isinstance(raw, str) else [str(v) for v in raw])  # e.g. "SE", "GR\\IR"
    if te is not None and tr is not None:
        if te >= 60 and tr >= 1500:
            return Phase.T2, 0.7, f"long TE/TR ({te:g}/{tr:g} ms{', ' + sequence if sequence else ''}): T2-weighted"
        if te < 30 and tr < 1000:
            return Phase.T1, 0.7, f"short TE/TR ({te:g}/{tr:g} ms{', ' + sequence if sequence else ''}): T1-weighted"
    if "GR" in sequence.split("\\") and (tr is None or tr < 1000):
        return Phase.T1, 0.5, f"gradient-echo ScanningSequence {sequence}: assumed T1-weighted"
    return Phase.T1, 0.3, "MR without sequence keyword or usable TE/TR: assumed T1 (override if wrong)"


def _bolus_delay(datasets) -> tuple[float, str] | None:
    """Seconds from bolus start to acquisition, and where they come from: ContrastBolusStartTime with the
    acquisition time, else TriggerTime (ms, some dynamic MR sequences write the time after the bolus there)."""
    ds = datasets[0]
    start, acquired = _seconds(ds.get("ContrastBolusStartTime")), acquisition_seconds(datasets)
    if start is not None and acquired is not None:
        return acquired - start, "ContrastBolusStartTime"
    trigger = ds.get("TriggerTime")
    with contextlib.suppress(TypeError, ValueError):
        if trigger not in (None, "") and float(trigger) > 0:
            return float(trigger) / 1000.0, "TriggerTime"
    return None


def _post_contrast_mr(datasets, found) -> tuple[Phase, float, str]:
    """Post-contrast MR by the time after the bolus: pre-contrast, arterial, portal venous, transitional
    (delayed for extracellular agents), hepatobiliary (≥ 15 min; gadoxetate); DCE when the timing is unknown."""
    ds = datasets[0]
    agent = str(ds.get("ContrastBolusAgent") or "").upper()
    hepatobiliary = any(name in agent for name in HEPATOBILIARY_AGENTS)
    keyword = f"keyword '{found[1]}' with contrast" if found else "contrast given"
    timing = _bolus_delay(datasets)
    if timing is None:
        return Phase.DCE, 0.5 if found else 0.4, f"{keyword}, timing unknown: dynamic post-contrast assumed"
    delay, source = timing
    phase = next(p for limit, p in _MR_TIMING if delay < limit)
    agent_name = "gadoxetate " if hepatobiliary else ""
    if phase is Phase.HBP:
        return (Phase.HBP, 0.7 if hepatobiliary else 0.5,
                f"{keyword}; acquired {delay / 60:.0f} min after the {agent_name}bolus ({source})")
    if phase is Phase.MR_PRE:
        return phase, 0.7, f"{keyword}; acquired {-delay:.0f} s before the bolus ({source}): pre-contrast"
    name = {Phase.MR_AP: "arterial", Phase.MR_PVP: "portal venous",
            Phase.TP: "transitional" if hepatobiliary else "delayed"}[phase]
    return phase, 0.7, f"{keyword}; acquired {delay:.0f} s after the {agent_name}bolus ({source}): {name} phase"


def _detect_ct(datasets, texts: list[str]) -> tuple[Phase, float, str]:
    ds = datasets[0]
    agent = _has_contrast_agent(ds)
    text_contrast = _contrast_named(texts)
    found = _keyword_phase(_CT_RULES, *texts)
    if found:
        phase, word = found
        if phase is Phase.NC and agent:
            return phase, 0.6, f"description keyword '{word}' (although ContrastBolusAgent is set)"
        return phase, 0.9, f"description keyword '{word}'"
    agent_text = str(ds.get("ContrastBolusAgent") or "").strip()
    route = _iv_route(ds)
    if agent or text_contrast or route:
        why = (f"ContrastBolusAgent '{agent_text}'" if agent_text else "contrast named in the description"
               if text_contrast else f"ContrastBolusRoute '{ds.get('ContrastBolusRoute')}'")
        start = _seconds(ds.get("ContrastBolusStartTime"))
        acquired = acquisition_seconds(datasets)
        if start is not None and acquired is not None and acquired >= start:
            delay = acquired - start
            phase = next(p for limit, p in _TIMING if delay < limit)
            return phase, 0.7, f"contrast given ({why}); acquired {delay:.0f} s after bolus start"
        return Phase.PVP, 0.4, f"contrast given ({why}), {UNTIMED_CONTRAST}"
    return Phase.NC, 0.4, NO_CONTRAST_TAGS


def order_contrast_series(candidates: list[Series]) -> None:
    """Assign AP, PVP, DP by acquisition order to ≥2 untimed contrast CT series of one study."""
    by_study: dict[str, list[Series]] = {}
    for s in candidates:
        by_study.setdefault(s.meta.get("study_uid", ""), []).append(s)
    for group in by_study.values():
        timed = [s for s in group if s.meta.get("acquisition_seconds") is not None]
        if len(timed) < 2:
            continue
        timed.sort(key=lambda s: s.meta["acquisition_seconds"])
        order = [Phase.AP, Phase.PVP] + [Phase.DP] * (len(timed) - 2)
        for rank, (s, phase) in enumerate(zip(timed, order), start=1):
            s.phase = phase
            s.meta["phase_confidence"] = 0.5
            s.meta["phase_reason"] = f"contrast CT #{rank} of {len(timed)} by acquisition time → {phase.value}"


def combine_with_image(tags: tuple[Phase, float, str], image) -> tuple[Phase, float, str]:
    """Combine a CT series' tag answer (phase, confidence, reason) with its image-based `PhaseMeasurement`.

    Weak tags (confidence <= WEAK_TAGS: no keyword, no timing) give way to a more confident image, or to an image
    that is sure (>= 0.9) about contrast itself (NC vs a contrast phase). Strong tags win, unless the
    image contradicts them about contrast itself (tags NC but the image's probability of a contrast phase >= 0.9,
    or the reverse): then the image wins with a warning. The reason shows both answers.
    """
    phase, confidence, reason = tags
    both = f"tags: {reason} ({phase.value}, {confidence:.2f}); {image.reason}"
    if image.phase is phase:
        return phase, round(max(confidence, image.confidence), 2), both
    p_nc = (image.probabilities or {}).get(Phase.NC.value, 1.0 if image.phase is Phase.NC else 0.0)
    contradiction = (p_nc if phase is not Phase.NC else 1.0 - p_nc) >= 0.9  # the image is sure about contrast
    if confidence <= WEAK_TAGS and (image.confidence > confidence or contradiction):
        return image.phase, image.confidence, f"{both} → image wins over weak tags"
    if contradiction:
        log.warning("Tags say %s but the image says %s: %s", phase.value, image.phase.value, image.reason)
        return image.phase, image.confidence, f"{both} → image contradicts the tags about contrast: image wins"
    return phase, confidence, f"{both} → tags win"


def refine_with_image(series: list[Series]) -> None:
    """Measure the image of CT series whose tags are weak or say non-contrast, and combine (`combine_with_image`)."""
    from .errors import HCCFusionError
    from .phase_image import measure_phase

    for s in series:
        tags = (s.phase, float(s.meta.get("phase_confidence", 0.0)), str(s.meta.get("phase_reason", "")))
        if s.phase.modality.value != "CT" or (tags[1] > WEAK_TAGS and s.phase is not Phase.NC):
            continue  # strong contrast tags are not measured (time); strong NC tags are, for the contradiction
        try:
            image = measure_phase(s.image)
        except HCCFusionError as exc:
            log.info("Series %s: no image-based phase (%s); the tags stand", s.name, exc)
            continue
        s.phase, confidence, reason = combine_with_image(tags, image)
        s.meta.update(phase_confidence=confidence, phase_reason=reason, phase_image={
            "phase": image.phase.value, "sub_label": image.sub_label, "confidence": image.confidence,
            "seconds": image.seconds, "aorta_hu": image.aorta_hu, "portal_vein_hu": image.portal_vein_hu,
            "liver_hu": image.liver_hu})


def phase_from_name(name: str) -> tuple[Phase, float, str] | None:
    """Phase from a file/series name ("PVP", "arterial", "liver_T2w", "case1_adc")."""
    with contextlib.suppress(InputError):
        return Phase.parse(name), 0.9, f"name '{name}'"
    upper = name.upper().replace("_", " ").replace("-", " ")
    tokens = set(_TOKEN.findall(upper))
    for code in ("HBP", "ADC", "DWI", "DCE", "PET", "CEUS", "PVP", "NC", "AP", "DP", "T1", "T2"):
        if code in tokens or code + "W" in tokens:
            return Phase(code), 0.8, f"name token '{code}'"
    found = (_keyword_phase(_MR_NAME_RULES[0], upper) or _keyword_phase(_CT_RULES, upper)
             or _keyword_phase(_MR_NAME_RULES[1], upper))
    if found:
        return found[0], 0.7, f"name keyword '{found[1]}'"
    return None


def guess_from_intensity(image: sitk.Image, name: str) -> tuple[Phase, float, str]:
    stats = sitk.StatisticsImageFilter()
    stats.Execute(image)
    if stats.GetMinimum() <= -500:
        return Phase.PVP, 0.2, f"no phase in name '{name}'; CT-like HU values: assumed portal venous (override if wrong)"
    return Phase.T1, 0.2, f"no phase in name '{name}'; non-CT intensities: assumed MR T1 (override if wrong)"
