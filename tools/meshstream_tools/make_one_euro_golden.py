"""Write tests/data/one_euro_golden.json from the scalar reference (meshstream_tools.one_euro_reference).

    python tools/make_one_euro_golden.py
"""

from __future__ import annotations

import argparse
import json

from meshstream_tools import REPOSITORY
from meshstream_tools.one_euro_reference import golden_cases


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    target = REPOSITORY / "tests" / "data" / "one_euro_golden.json"
    document = {
        "about": "One Euro filter (Casiez et al. 2012) outputs from tools/meshstream_tools/one_euro_reference.py; "
                 "regenerate with tools/make_one_euro_golden.py",
        "cases": golden_cases(),
    }
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
