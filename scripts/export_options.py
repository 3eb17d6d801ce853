"""Write qgis_plugin/options_schema.json, the edit options the QGIS plugin builds its Processing
parameters from, out of the backend's one declaration of them (rs_geo_edit.options).

Run it after adding or changing an option; tests/test_options.py fails while the file is stale.

Usage: PYTHONPATH=backend python scripts/export_options.py [--check]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "qgis_plugin" / "options_schema.json"


def main() -> int:
    from rs_geo_edit.options import options_schema_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Exit 1 if the file is stale; write nothing.")
    text = options_schema_json()
    current = TARGET.read_text() if TARGET.is_file() else None
    if parser.parse_args().check:
        if current != text:
            print(f"{TARGET} is stale: run scripts/export_options.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        tmp = TARGET.with_name(f".{TARGET.name}.partial")
        tmp.write_text(text)
        os.replace(tmp, TARGET)
    print(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
