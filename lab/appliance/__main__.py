"""``python -m lab.appliance build``: builds (or finds cached) the appliance image and
copies it to ``var/appliance/`` (``make appliance``)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m lab.appliance build", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xenweb.settings")
    import django

    django.setup()
    from lab.appliance.image import ensure_appliance_image
    from lab.errors import LabError
    from lab.rootfs import run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    began = time.monotonic()
    try:
        image = ensure_appliance_image()
    except LabError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    out = Path("var/appliance")
    out.mkdir(parents=True, exist_ok=True)
    for path in (image.raw, image.qcow2):
        target = out / path.name
        target.unlink(missing_ok=True)
        if path.suffix == ".qcow2":
            shutil.copyfile(path, target)
        else:
            run(["cp", "--sparse=always", str(path), str(target)], step="copying the image")
        print(f"{target}  ({path.stat().st_blocks * 512 / 2**20:.0f} MiB on disk)")
    print(f"in {time.monotonic() - began:.0f} s (cache: {image.root})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
