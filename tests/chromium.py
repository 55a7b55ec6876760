"""Debian's Chromium (/usr/bin/chromium, `make deps`) driven by Playwright from PyPI, for the
page's browser tests and bench/ui.py. No browser is downloaded (`playwright install` is never
run); the flags keep Chromium off the network: no background requests, updates or sync."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

CHROMIUM = os.environ.get("OVSCTL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = os.environ.get(
    "OVSCTL_TEST_ARTIFACTS",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts"),
)


@contextmanager
def browser(width: int = 1400, height: int = 900):
    """A headless Chromium with a fresh profile (removed afterwards); yields the Playwright
    BrowserContext."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: Debian package chromium (`make deps`)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="ovsctl-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def artifact(*parts: str) -> str:
    """A path under the test artifacts directory (tests/artifacts or $OVSCTL_TEST_ARTIFACTS,
    not committed), its directory created."""
    path = os.path.join(ARTIFACTS, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


SHRINK_JS = """async ([b64, n]) => {
  const img = new Image();
  img.src = "data:image/png;base64," + b64;
  await img.decode();
  const c = document.createElement("canvas");
  [c.width, c.height] = [img.width, img.height];
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const p = g.getImageData(0, 0, c.width, c.height).data;
  const freq = new Map();
  for (let i = 0; i < p.length; i += 4) {
    const k = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
    freq.set(k, (freq.get(k) || 0) + 1);
  }
  const top = [...freq.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k]) => [k >> 16, (k >> 8) & 255, k & 255]);
  const memo = new Map();
  const idx = new Uint8Array(c.width * c.height);
  for (let i = 0, j = 0; i < p.length; i += 4, j++) {
    const k = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
    let m = memo.get(k);
    if (m === undefined) {
      let best = Infinity;
      top.forEach((t, ti) => {
        const e = 3 * (t[0] - p[i]) ** 2 + 4 * (t[1] - p[i + 1]) ** 2 + 2 * (t[2] - p[i + 2]) ** 2;
        if (e < best) [best, m] = [e, ti];
      });
      memo.set(k, m);
    }
    idx[j] = m;
  }
  let s = "";
  for (let i = 0; i < idx.length; i += 0x8000) s += String.fromCharCode(...idx.subarray(i, i + 0x8000));
  return [c.width, c.height, top.flat(), btoa(s)];
}"""


def shrink_png(src: str, dst: str, colors: int = 128) -> int:
    """A screenshot made small for docs/img: its `colors` most frequent colours as a palette
    (every pixel the nearest of them; Chromium decodes, zlib at level 9 encodes). Returns the
    size in bytes. `python -m tests.chromium SRC.png DST.png`."""
    import base64
    import struct
    import zlib

    with open(src, "rb") as fh:
        b64 = base64.b64encode(fh.read()).decode()
    with browser() as ctx:
        w, h, palette, idx = ctx.new_page().evaluate(SHRINK_JS, [b64, colors])
    idx = base64.b64decode(idx)
    rows = b"".join(b"\0" + idx[y * w : (y + 1) * w] for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
    png += chunk(b"PLTE", bytes(palette)) + chunk(b"IDAT", zlib.compress(rows, 9))
    png += chunk(b"IEND", b"")
    with open(dst, "wb") as fh:
        fh.write(png)
    return len(png)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.chromium SRC.png DST.png  (a screenshot made small)")
    print(f"{sys.argv[2]}: {shrink_png(sys.argv[1], sys.argv[2])} bytes")
