"""Render axial / sagittal / coronal views of phantoms beside the real CT, to judge realism by eye.

Run: ``.venv/bin/python bench/gallery.py [--out docs/img] [--seeds 1 2] [--cervical 3]``.
Each lumbar image shows the phantom (top row) and the real abdomen CT
(``$SPINENODE_DATA/real-ct/totalseg-abdomen/ct.nii.gz``, bottom row) resampled to 1 mm in the
same LPS-aligned planes through L3 (axial at the pedicles, mid-sagittal, coronal through the
bodies), in a bone window (W 1800 / L 400) and a soft-tissue window (W 400 / L 40).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.nifti import read_nifti  # noqa: E402
from inference.phantom import PhantomSpec, generate  # noqa: E402

HALF = 120  # mm shown either side of the centre in each plane


def plane(
    volume: np.ndarray, affine: np.ndarray, centre: np.ndarray, view: str, half: float = HALF
) -> np.ndarray:
    """A 1 mm LPS-aligned plane through ``centre``: axial (rows +y, cols +x), sagittal
    (rows −z, cols +y), coronal (rows −z, cols +x)."""
    g = np.arange(-half, half + 1.0)
    a, b = np.meshgrid(g, g, indexing="ij")
    pts = np.zeros((*a.shape, 3))
    if view == "axial":
        pts[..., 1], pts[..., 0] = a, b
    elif view == "sagittal":
        pts[..., 2], pts[..., 1] = -a, b
    else:
        pts[..., 2], pts[..., 0] = -a, b
    pts = pts.reshape(-1, 3) + centre
    idx = np.linalg.solve(affine, np.c_[pts, np.ones(len(pts))].T)[:3]
    out = ndimage.map_coordinates(volume.astype(np.float32), idx, order=1, cval=-1024.0)
    return np.asarray(out.reshape(a.shape))


def window(img: np.ndarray, width: float, level: float) -> np.ndarray:
    return np.asarray(np.clip((img - level + width / 2) / width * 255, 0, 255).astype(np.uint8))


def row(volume: np.ndarray, affine: np.ndarray, centres: dict[str, np.ndarray]) -> np.ndarray:
    tiles = []
    for view in ("axial", "sagittal", "coronal"):
        img = plane(volume, affine, centres[view], view)
        tiles.append(window(img, 1800, 400))
        tiles.append(window(img, 400, 40))
    gap = np.zeros((tiles[0].shape[0], 4), np.uint8)
    return np.hstack([t for tile in tiles for t in (tile, gap)])


def save(rows: list[np.ndarray], captions: list[str], path: Path) -> None:
    img = Image.fromarray(np.vstack([np.pad(r, ((18, 2), (0, 0))) for r in rows]))
    draw = ImageDraw.Draw(img)
    for k, text in enumerate(captions):
        draw.text((4, k * (rows[0].shape[0] + 20) + 3), text, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    print(f"wrote {path} {img.size}")


def hu_stats(name: str, hu: np.ndarray, bone: np.ndarray) -> None:
    """Print HU percentiles of vertebral bone and of the soft tissue/fat inside the body."""
    soft = hu[(hu > -200) & (hu < 150) & ~bone]
    fat = soft[soft < -30]
    muscle = soft[soft >= 0]
    b = np.percentile(hu[bone], [10, 50, 90])
    print(
        f"{name:<34s} vertebrae HU p10/p50/p90 {b[0]:6.0f} {b[1]:6.0f} {b[2]:6.0f} | "
        f"fat median {np.median(fat):6.0f} | soft tissue median {np.median(muscle):5.0f} | "
        f"fat/soft voxel ratio {len(fat) / max(len(muscle), 1):.2f}"
    )


def real_ct() -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    data = Path(os.environ.get("SPINENODE_DATA", ROOT.parent / "shared" / "data"))
    folder = data / "real-ct" / "totalseg-abdomen"
    if not (folder / "ct.nii.gz").is_file():
        print(f"real CT not found under {folder}: phantoms only (set SPINENODE_DATA)")
        return None
    hu, affine = read_nifti(folder / "ct.nii.gz")
    labels, _ = read_nifti(folder / "vertebrae_totalseg_v2.nii.gz")
    hu_stats("real CT (TotalSegmentator, 3 mm)", hu.astype(np.float32), labels > 0)
    idx = np.argwhere(labels == 29).mean(axis=0)  # L3 in TotalSegmentator v2
    return hu.astype(np.float32), affine, (affine @ np.r_[idx, 1.0])[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--cervical", type=int, nargs="*", default=[3])
    parser.add_argument("--full", type=int, nargs="*", default=[1])
    args = parser.parse_args()
    real = real_ct()
    for seed in args.seeds:
        ph = generate(PhantomSpec.from_seed(seed, "lumbar", spacing_mm=(1.0, 0.8, 0.8)))
        hu_stats(f"phantom lumbar seed {seed} (0.8 mm)", ph.hu, ph.labels > 0)
        coarse = generate(ph.spec.with_(spacing_mm=(3.0, 3.0, 3.0)))  # the real CT's voxels
        hu_stats(f"phantom lumbar seed {seed} (3 mm)", coarse.hu, coarse.labels > 0)
        l3 = ph.truth.vertebra("L3")
        c = np.array(l3.body_centroid)
        ped = np.mean([p.isthmus_centre for p in l3.pedicles], axis=0)
        centres = {"axial": ped, "sagittal": c, "coronal": c}
        rows, caps = [row(ph.hu, ph.affine, centres)], [f"phantom lumbar seed {seed}"]
        if real is not None:
            hu, affine, rc = real
            rows.append(row(hu, affine, {"axial": rc, "sagittal": rc, "coronal": rc}))
            caps.append("real CT (TotalSegmentator abdomen, 3 mm)")
        save(rows, caps, args.out / f"phantom_lumbar_{seed}.png")
    for seed in args.cervical:
        ph = generate(PhantomSpec.from_seed(seed, "cervical", spacing_mm=(0.8, 0.5, 0.5)))
        c2 = np.mean([c.location for c in ph.truth.c2], axis=0)
        body = np.array(ph.truth.vertebra("C2").body_centroid)
        centres = {"axial": c2, "sagittal": body, "coronal": body}
        save(
            [row(ph.hu, ph.affine, centres)],
            [f"phantom cervical seed {seed}"],
            args.out / f"phantom_cervical_{seed}.png",
        )

    for seed in args.full:
        render_full(seed, args.out / f"phantom_full_{seed}.png")


def render_full(seed: int, path: Path) -> None:
    """Mid-sagittal and coronal views of a whole-spine phantom (2 mm per pixel)."""
    ph = generate(PhantomSpec.from_seed(seed, "full", spacing_mm=(2.0, 1.0, 1.0)))
    c = np.array(ph.truth.vertebra("T8").body_centroid)
    tiles = []
    for view in ("sagittal", "coronal"):
        img = plane(ph.hu, ph.affine, c, view, half=340)[::2, 70:-70:2]
        tiles += [
            window(img, 1800, 400),
            window(img, 400, 40),
            np.zeros((img.shape[0], 4), np.uint8),
        ]
    save([np.hstack(tiles)], [f"phantom full spine seed {seed}"], path)


if __name__ == "__main__":
    main()
