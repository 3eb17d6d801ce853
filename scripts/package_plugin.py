"""Build the QGIS plugin zip (installable through Plugins > Install from ZIP).

The zip holds one folder, rs_geo_edit_qgis/, with the plugin's Python files, its options schema,
icon, help page (with its screenshot) and changelog, the top-level metadata.txt (the single source of the plugin's
metadata), the LICENSE and the README.

Usage: python3 scripts/package_plugin.py [--out dist/rs_geo_edit_qgis.zip]
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "rs_geo_edit_qgis"
PLUGIN_FILES = ("*.py", "options_schema.json", "icon.svg", "help.html", "images/*.png", "CHANGELOG.md")


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for pattern in PLUGIN_FILES:
            paths = sorted((ROOT / "qgis_plugin").glob(pattern))
            if not paths:
                raise SystemExit(f"qgis_plugin/{pattern} is missing: the plugin cannot be packaged without it")
            for path in paths:
                zf.write(path, f"{FOLDER}/{path.relative_to(ROOT / 'qgis_plugin').as_posix()}")
        for name in ("metadata.txt", "LICENSE", "README.md"):
            zf.write(ROOT / name, f"{FOLDER}/{name}")
    tmp.replace(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / f"{FOLDER}.zip")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
