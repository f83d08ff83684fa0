"""Where the read-only shared test data lives (beside the clone: ../shared/testdata)."""

import os
from pathlib import Path

SHARED = Path(os.environ.get("XENWEB_SHARED_DIR",
                             Path(__file__).resolve().parents[2] / "shared"))
TESTDATA = SHARED / "testdata"
