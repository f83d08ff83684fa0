"""``python -m lab {up,down,status}``: Django is set up before the lab (which enrols hosts
through the app's models) is imported."""

from __future__ import annotations

import os
import sys

import django


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xenweb.settings")
    django.setup()
    from lab.cli import run

    return run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
