"""Command-line interface (Typer): thin adapters over ``pipeline`` and friends.

``rs-geo-edit SCENE --aoi AOI ...`` is short for ``rs-geo-edit edit SCENE --aoi AOI ...``.
Heavy libraries are imported inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import RsGeoEditError

console = Console(stderr=True)
out = Console()

EXAMPLES = """\
Examples:

  rs-geo-edit scene.tif --aoi rois.geojson --mode regenerate -o scene_new.tif
  rs-geo-edit scene.tif --aoi rois.gpkg --layer flood --prompt "flooded fields" --seed 7
  rs-geo-edit plan scene.tif --aoi rois.geojson --preview plan.png
  rs-geo-edit demo
"""

app = typer.Typer(
    name="rs-geo-edit", add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
    help="Text-guided generative editing of georeferenced remote-sensing scenes.\n\n" + EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"rs-geo-edit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Text-guided generative editing of georeferenced remote-sensing scenes."""


def _parse_bands(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give three 1-based band numbers such as 3,2,1") from None


def _show_warnings(caught) -> None:
    seen = set()
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            continue  # library housekeeping, not something the user can act on
        text = str(w.message)
        if text not in seen:
            seen.add(text)
            console.print(f"[yellow]warning:[/] {text}", highlight=False)


def _run(func, *args, **kwargs):
    """Run a command body: warnings printed once, domain errors as one line and exit code 2."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return func(*args, **kwargs)
        except RsGeoEditError as exc:
            _show_warnings(caught)
            caught.clear()
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: nothing was written")
            raise typer.Exit(130) from None
        finally:
            _show_warnings(caught)


@app.command(epilog="Example: rs-geo-edit plan scene.tif --aoi rois.geojson --preview plan.png")
def plan(
    scene: Path = typer.Argument(..., help="Input raster (GeoTIFF)."),
    aoi: Path = typer.Option(..., "--aoi", "-a", help="ROI polygons: GeoJSON, GeoPackage, Shapefile, FlatGeobuf."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer of a multi-layer AOI file."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Prompt for ROIs without their own."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="AOI attribute holding per-ROI prompts."),
    margin: int = typer.Option(64, "--margin", help="Smallest context margin around each ROI, pixels."),
    margin_frac: float = typer.Option(0.5, "--margin-frac", help="Margin as a fraction of the ROI extent, if larger."),
    max_side: int = typer.Option(1024, "--max-side", help="Windows with a longer side are edited at reduced resolution."),
    rgb_bands: Optional[str] = typer.Option(None, "--rgb-bands", help="1-based bands the RGB model sees, e.g. 3,2,1."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a PNG of windows and ROIs over the scene."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Show the window plan of an edit: windows, sizes, ROI pixels, reduced-resolution factors."""

    def body():
        import json

        from .config import WindowConfig, make_config
        from .pipeline import plan_scene

        config = make_config(prompt=prompt, prompt_field=prompt_field, layer=layer, rgb_bands=_parse_bands(rgb_bands),
                             windows=WindowConfig(margin_px=margin, margin_frac=margin_frac, max_side=max_side))
        result = plan_scene(scene, aoi, config)
        summary = result.as_dict()
        if as_json:
            out.print_json(json.dumps(summary))
        else:
            _print_plan(summary, max_side)
        if preview is not None:
            from .geo.preview import render_plan
            from .geo.raster import check_output_path

            check_output_path(preview, [scene, aoi], overwrite=True)
            render_plan(scene, result, preview)
            console.print(f"preview written to {preview}")

    _run(body)


def _print_plan(summary: dict, max_side: int) -> None:
    from rich.table import Table

    out.print(f"[bold]{summary['scene']}[/]: {summary['width']} x {summary['height']} px, "
              f"{summary['count']} band(s) {summary['dtype']}, {summary['crs']}; "
              f"RGB bands {summary['rgb_bands']}", highlight=False)
    aoi = summary["aoi"]
    out.print(f"AOI {aoi['path']} (layer {aoi['layer']}, {aoi['crs']}): {aoi['rois']} ROI(s)"
              + (f", {aoi['sources']} copy source(s)" if aoi["sources"] else "")
              + (f", {len(aoi['skipped'])} skipped" if aoi["skipped"] else ""), highlight=False)
    table = Table(title="edit windows (pixels)")
    for col in ("window", "col, row", "width x height", "features", "prompts", "work size", "scale"):
        table.add_column(col)
    reduced = False
    for w in summary["windows"]:
        reduced |= w["scale"] < 1
        table.add_row(str(w["index"]), f"{w['col_off']}, {w['row_off']}", f"{w['width']} x {w['height']}",
                      ", ".join(map(str, w["features"])),
                      "; ".join(p or "-" for p in w["prompts"]),
                      f"{w['work_shape'][1]} x {w['work_shape'][0]}", f"{w['scale']:.3f}")
    out.print(table)
    if reduced:
        out.print(f"Windows with a side over {max_side} px are edited at reduced resolution (scale < 1) and "
                  "brought back to full resolution for blending; pixels outside the ROIs stay exact. "
                  "Raise --max-side to edit them at full resolution (more memory and time).")


def sample_paths() -> tuple[Path, Path]:
    """The bundled sample scene and its AOI."""
    data = Path(__file__).resolve().parent / "data"
    return data / "aerial_3857.tif", data / "aerial_aoi.geojson"


@app.command(epilog="Example: rs-geo-edit demo --out-dir out")
def demo(out_dir: Path = typer.Option(Path("out"), "--out-dir", help="Folder for the demo's outputs.")) -> None:
    """Run the bundled sample: the window plan of the aerial scene and its AOI, with a preview PNG."""

    def body():
        from .config import make_config
        from .geo.preview import render_plan
        from .pipeline import plan_scene

        scene, aoi = sample_paths()
        out_dir.mkdir(parents=True, exist_ok=True)
        result = plan_scene(scene, aoi, make_config())
        _print_plan(result.as_dict(), 1024)
        preview = render_plan(scene, result, out_dir / "demo_plan.png")
        out.print(f"plan preview: {preview}")

    _run(body)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point; a first argument that is not a command means ``edit``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    if args and not args[0].startswith("-") and args[0] not in commands and "edit" in commands:
        args.insert(0, "edit")
    app(args=args, prog_name="rs-geo-edit")


if __name__ == "__main__":
    main()
