"""Write tests/data/one_euro_golden.json from the scalar reference (tests/one_euro_reference.py).

    python tools/make_one_euro_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from one_euro_reference import golden_cases  # noqa: E402

if __name__ == "__main__":
    target = ROOT / "tests" / "data" / "one_euro_golden.json"
    document = {
        "about": "One Euro filter (Casiez et al. 2012) outputs from tests/one_euro_reference.py; "
                 "regenerate with tools/make_one_euro_golden.py",
        "cases": golden_cases(),
    }
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {target}")
