"""Metrics for bench_lumbar.py: Dice, level identification, screw agreement, grades vs truth.

Patient frame: DICOM LPS mm throughout (phantom truth and the pipeline both use it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from inference.geometry import (
    Frame,
    SignedDistance,
    bounding_box,
    crop_affine,
    index_to_mm,
    unit,
    voxel_spacing,
)
from inference.grading import Screw, babu_grade, facet_joint, gertzbein_robbins
from inference.lumbar.frames import screw_angles, vertebra_anatomy
from inference.pipeline import Segmentation
from inference.results import AnalysisResult, ScrewPlan, Side
from inference.segment.grid import working_volume
from inference.verse import LABEL_TO_LEVEL, LEVEL_TO_LABEL


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return float(2.0 * (a & b).sum() / s) if s else float("nan")


@dataclass
class Tally:
    """Accumulated per-level and overall figures."""

    dice: dict[str, list[float]] = field(default_factory=dict)
    ident: list[bool] = field(default_factory=list)
    screw: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    gr: list[str] = field(default_factory=list)
    babu: list[int] = field(default_factory=list)
    missing_screws: int = 0
    reference_screws: int = 0
    detail: list[str] = field(default_factory=list)


def level_dice(labels: np.ndarray, truth: np.ndarray, levels: list[str], tally: Tally) -> None:
    for level in levels:
        lab = LEVEL_TO_LABEL[level]
        tally.dice.setdefault(level, []).append(dice(labels == lab, truth == lab))


def identification(result: AnalysisResult, labels: np.ndarray, truth: np.ndarray) -> list[bool]:
    """Per found vertebra: does the truth under our instance carry the same VerSe id?"""
    out = []
    for v in result.vertebrae:
        under = truth[labels == v.label]
        under = under[under > 0]
        out.append(bool(under.size and np.bincount(under).argmax() == v.label))
    return out


def _cylinder_dice(a: ScrewPlan, entry: np.ndarray, tip: np.ndarray, diam: float) -> float:
    """Overlap Dice of two screw cylinders, sampled on a 0.4 mm grid."""
    e1, t1 = np.array(a.entry_mm), np.array(a.tip_mm)
    lo = np.minimum.reduce([e1, t1, entry, tip]) - 5
    hi = np.maximum.reduce([e1, t1, entry, tip]) + 5
    axes = [np.arange(lo[k], hi[k], 0.4) for k in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)

    def inside(e: np.ndarray, t: np.ndarray, r: float) -> np.ndarray:
        d = unit(t - e)
        s = (pts - e) @ d
        radial = np.linalg.norm(pts - e - s[:, None] * d, axis=1)
        out: np.ndarray = (s >= 0) & (s <= np.linalg.norm(t - e)) & (radial <= r)
        return out

    return dice(inside(e1, t1, a.diameter_mm / 2), inside(entry, tip, diam / 2))


def truth_frame(v: dict[str, Any]) -> Frame:
    return Frame(np.array(v["body_centroid"]), np.array(v["r"]), np.array(v["a"]), np.array(v["s"]))


def compare_screws(
    result: AnalysisResult,
    truth_json: dict[str, Any],
    truth: np.ndarray,
    affine: np.ndarray,
    tally: Tally,
) -> None:
    """Screw agreement with the phantom's reference screws, and grades on the TRUE masks."""
    ours = {(s.level, str(s.side)): s for s in result.screws}
    verts = {v["level"]: v for v in truth_json["vertebrae"]}
    order = [
        v["level"] for v in sorted(truth_json["vertebrae"], key=lambda v: -v["body_centroid"][2])
    ]
    for level, v in verts.items():
        if level not in LEVEL_TO_LABEL or LEVEL_TO_LABEL[level] < 20:
            continue
        lab = LEVEL_TO_LABEL[level]
        mask_full = truth == lab
        if not mask_full.any():
            continue
        box = bounding_box(mask_full, 12)
        mask, sub = mask_full[box], crop_affine(affine, box)
        phi = SignedDistance(mask, sub)
        frame = truth_frame(v)
        k = order.index(level)
        upper = truth[box] == LEVEL_TO_LABEL.get(order[k - 1], -1) if k > 0 else None
        back = vertebra_anatomy(mask, sub, frame.s, frame.a).body_back_mm
        for ped in v["pedicles"]:
            tally.reference_screws += 1
            plan = ours.get((level, ped["side"]))
            if plan is None:
                tally.missing_screws += 1
                continue
            ref = ped["screw"]
            entry, tip = np.array(ref["entry"]), np.array(ref["tip"])
            tally.screw.setdefault(level, []).append(
                {
                    "dpta": abs(plan.pta_deg - ref["pta_deg"]),
                    "dpsa": abs(plan.psa_deg - ref["psa_deg"]),
                    "entry": float(np.linalg.norm(np.array(plan.entry_mm) - entry)),
                    "tip": float(np.linalg.norm(np.array(plan.tip_mm) - tip)),
                    "dlen": plan.length_mm - ref["length_mm"],
                    "ddia": plan.diameter_mm - ref["diameter_mm"],
                    "dice": _cylinder_dice(plan, entry, tip, ref["diameter_mm"]),
                }
            )
            side = Side(ped["side"])
            screw = Screw(np.array(plan.entry_mm), np.array(plan.tip_mm), plan.diameter_mm)
            gr = gertzbein_robbins(phi, screw, frame, side)
            tally.gr.append(gr.grade)
            babu = 0
            if upper is not None and upper.any():
                joint = facet_joint(mask, upper, sub, frame=frame, side=side, body_back_mm=back)
                babu = babu_grade(joint, screw)
            tally.babu.append(babu)
            row = tally.screw[level][-1]
            tpta, tpsa = screw_angles(frame, screw.entry, screw.tip, side)
            row.update(
                spta=plan.pta_deg - ref["pta_deg"],
                spsa=plan.psa_deg - ref["psa_deg"],
                fpta=plan.pta_deg - tpta,
                fpsa=plan.psa_deg - tpsa,
                tdpta=abs(tpta - ref["pta_deg"]),
                tdpsa=abs(tpsa - ref["psa_deg"]),
            )
            tally.detail.append(
                f"{level} {side:<5} PTA {plan.pta_deg:6.1f} (ref {ref['pta_deg']:6.1f}, ours in "
                f"true frame {tpta:6.1f}) PSA {plan.psa_deg:6.1f} (ref {ref['psa_deg']:6.1f}, "
                f"{tpsa:6.1f}) entry {row['entry']:5.1f} "
                f"tip {row['tip']:5.1f} d {plan.diameter_mm} (ref {ref['diameter_mm']}) "
                f"GR {gr.grade} {gr.breach_mm:.2f} {gr.direction or ''} Babu {babu}"
            )


def summary_rows(tally: Tally, levels: list[str]) -> list[str]:
    """Printable table: per level and overall.

    ``|dPTA|`` / ``|dPSA|`` compare the angles we report (in our frame) with the reference's;
    ``tPTA`` / ``tPSA`` measure our screw's line in the TRUE frame against the reference, so a
    frame turned about its axis (which the left/right averaging hides in the reported angles)
    shows there.
    """
    head = f"{'level':<7}{'Dice':>7}{'n':>4}{'|dPTA|':>8}{'|dPSA|':>8}{'tPTA':>7}{'tPSA':>7}"
    head += f"{'entry':>7}{'tip':>7}{'dLen':>7}{'dDia':>7}{'scrDice':>8}{'screws':>7}"
    rows = [head]
    all_s: list[dict[str, float]] = []
    all_d: list[float] = []
    for level in [*levels, "all"]:
        if level == "all":
            d, s = all_d, all_s
        else:
            d = [x for x in tally.dice.get(level, []) if np.isfinite(x)]
            s = tally.screw.get(level, [])
            all_d += d
            all_s += s

        def m(key: str, s: list[dict[str, float]] = s) -> float:
            return float(np.mean([x[key] for x in s])) if s else float("nan")

        rows.append(
            f"{level:<7}{np.mean(d) if d else float('nan'):>7.3f}{len(d):>4}{m('dpta'):>8.2f}"
            f"{m('dpsa'):>8.2f}{m('tdpta'):>7.2f}{m('tdpsa'):>7.2f}{m('entry'):>7.2f}{m('tip'):>7.2f}{m('dlen'):>7.2f}{m('ddia'):>7.2f}"
            f"{m('dice'):>8.3f}{len(s):>7}"
        )
    return rows


def signed_rows(tally: Tally, levels: list[str]) -> list[str]:
    """Printable table of the signed angle errors per level (ours − reference, degrees), each
    split into the frame term (our angle in our frame − our screw in the true frame) and the
    axis term (the rest: our screw in the true frame − the reference)."""
    rows = ["", "Signed angle errors (ours - reference, mean deg; frame + axis terms)"]
    rows.append(f"{'level':<7}{'dPTA':>7}{'frame':>7}{'axis':>7}{'dPSA':>7}{'frame':>7}{'axis':>7}")
    every: list[dict[str, float]] = []
    for level in [*levels, "all"]:
        s = every if level == "all" else tally.screw.get(level, [])
        if level != "all":
            every += s
        if not s:
            continue
        m = {k: float(np.mean([x[k] for x in s])) for k in ("spta", "fpta", "spsa", "fpsa")}
        rows.append(
            f"{level:<7}{m['spta']:>7.2f}{m['fpta']:>7.2f}{m['spta'] - m['fpta']:>7.2f}"
            f"{m['spsa']:>7.2f}{m['fpsa']:>7.2f}{m['spsa'] - m['fpsa']:>7.2f}"
        )
    return rows


def true_segmentation(hu: np.ndarray, affine: np.ndarray, truth: np.ndarray) -> Segmentation:
    """The phantom's TRUE labels as a :class:`Segmentation` on the pipeline's working grid.

    Each VerSe label is resampled (linear, > 0.5) onto the same 1 mm crop the segmenter uses, and
    the instances are numbered cranio-caudally, so the planner sees exactly what it sees after
    segmentation — only with the exact masks (planner error without segmentation error).
    """
    work = working_volume(hu, affine)
    native = voxel_spacing(affine)
    zoom = native / voxel_spacing(work.affine)
    sub = truth[work.box]
    ids = [int(i) for i in np.unique(sub) if i in LABEL_TO_LEVEL]
    best = np.zeros(work.hu.shape, np.float32)
    lab = np.zeros(work.hu.shape, np.uint8)
    for i in ids:
        nat = bounding_box(sub == i, 2)
        lo = np.array([s.start for s in nat]) * zoom
        hi = np.array([s.stop - 1 for s in nat]) * zoom
        w0 = np.ceil(lo).astype(int)
        w1 = np.minimum(np.floor(hi).astype(int) + 1, work.hu.shape)
        if np.any(w1 <= w0):
            continue
        box = tuple(slice(int(a), int(b)) for a, b in zip(w0, w1, strict=True))
        start = np.array([s.start for s in nat], dtype=np.float64)
        frac = ndimage.affine_transform(
            (sub[nat] == i).astype(np.float32),
            1.0 / zoom,
            offset=w0 / zoom - start,
            output_shape=tuple(int(b - a) for a, b in zip(w0, w1, strict=True)),
            order=1,
        )
        cur = best[box]
        take = (frac > 0.5) & (frac > cur)
        cur[take] = frac[take]
        lab[box][take] = i
    ids = [i for i in ids if (lab == i).any()]
    cents = {i: index_to_mm(work.affine, np.argwhere(lab == i)).mean(axis=0) for i in ids}
    ids.sort(key=lambda i: -cents[i][2])  # cranial first (LPS z up)
    inst = np.zeros_like(lab)
    for k, i in enumerate(ids, start=1):
        inst[lab == i] = k
    return Segmentation(
        work,
        inst,
        tuple(LABEL_TO_LEVEL[i] for i in ids),
        tuple(1.0 for _ in ids),
        np.array([cents[i] for i in ids]),
        (),
    )
