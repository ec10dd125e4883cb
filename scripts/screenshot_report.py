#!/usr/bin/env python3
"""Render a report.html in headless Chromium and save a PNG screenshot.

Checks a report the way a person would see it: a real browser lays out the page, decodes the
embedded images and applies the CSS. Network access is cut off inside the browser (every host
resolves to nothing), so anything the page tried to fetch would show up as missing.

    scripts/screenshot_report.py out/report/report.html -o shot.png [--width 1280 --height 2400]

Needs the Debian package ``chromium`` (``apt-get install -y chromium``); exits with 2 and one
line on stderr when it is missing or the HTML file does not exist.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def chromium_command(chromium: str, html: Path, png: Path, profile: str, width: int,
                     height: int) -> list[str]:
    """The Chromium command line: headless, no GPU, no background network, a throw-away profile."""
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
        html.resolve().as_uri(),
    ]


def screenshot(html: Path, png: Path, *, chromium: str = CHROMIUM, width: int = 1280,
               height: int = 2400, timeout: float = 120.0) -> Path:
    """Screenshot ``html`` into ``png``; raises ``RuntimeError`` with one line when it fails."""
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        raise RuntimeError(f"chromium not found at {chromium}; install it with "
                           "'apt-get install -y chromium' (Debian) or pass --chromium PATH")
    if not html.is_file():
        raise RuntimeError(f"{html}: no such HTML file")
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    profile = tempfile.mkdtemp(prefix="amc-chromium-")
    try:
        cmd = chromium_command(chromium, html, png, profile, width, height)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"chromium did not finish within {timeout:g} s") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if not png.is_file() or png.stat().st_size == 0:
        tail = " ".join((proc.stderr or "").split()[-30:])
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {tail}")
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="report.html (or any local HTML file)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--chromium", default=CHROMIUM, help=f"browser binary (default {CHROMIUM})")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = ap.parse_args(argv)
    try:
        out = screenshot(args.html, args.output, chromium=args.chromium, width=args.width,
                         height=args.height, timeout=args.timeout)
    except RuntimeError as exc:
        print(f"screenshot_report: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
