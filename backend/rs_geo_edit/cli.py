"""Command-line interface (Typer): thin adapters over ``pipeline`` and friends.

``rs-geo-edit SCENE --aoi AOI ...`` is short for ``rs-geo-edit edit SCENE --aoi AOI ...``.
Heavy libraries are imported inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Callable, List, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import IncompatibleOptions, RsGeoEditError

console = Console(stderr=True)
out = Console()

EXAMPLES = """\
Examples:

  rs-geo-edit scene.tif --aoi rois.geojson --mode regenerate -o scene_new.tif
  rs-geo-edit scene.tif --aoi rois.gpkg --layer flood --prompt "flooded fields" --seed 7
  rs-geo-edit scene.tif --aoi rois.geojson --engine instruct --prompt "flood the fields" --engine-model ./ip2p
  rs-geo-edit pairs scene.tif --aoi rois.geojson --prompt "flood the fields" --out-dir pairs/ --variants 3
  rs-geo-edit plan scene.tif --aoi rois.geojson --preview plan.png
  rs-geo-edit demo
"""


# Inputs several commands share; the edit options themselves come from options.EditOptions.
AoiOpt = Annotated[Path, typer.Option("--aoi", "-a", help="ROI polygons: GeoJSON, GeoPackage, Shapefile, FlatGeobuf.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]

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


def cli_name(name: str) -> str:
    """How the CLI spells an option or input named in an error: ``max_side`` -> ``--max-side``."""
    return "--" + name.replace("_", "-")


def _option_parameter(name: str) -> inspect.Parameter:
    from .options import SPEC_BY_NAME

    spec = SPEC_BY_NAME[name]
    declared = [flag for flag in spec.flags if "/" in flag] or [cli_name(name)]
    declared += [flag for flag in spec.flags if "/" not in flag]
    kind = Optional[spec.type] if spec.nullable else spec.type
    info = typer.Option(*declared, help=spec.help_text().replace("[", "\\["),
                        show_default=spec.default is not None and not spec.shown,
                        rich_help_panel="Edit options" if spec.group == "basic" else "Advanced edit options")
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=spec.default, annotation=Annotated[kind, info])


class _OptionsCommand:
    """A command function plus CLI options of :class:`EditOptions` (``names``, or all of them
    but ``exclude``). Typer reads its signature when it builds the CLI, not at import, so the
    options (flags, types, defaults and help, generated from the schema) cost nothing to
    ``import rs_geo_edit.cli``."""

    def __init__(self, func: Callable, names: tuple[str, ...], exclude: tuple[str, ...]):
        self.func, self.chosen, self.exclude = func, names, exclude
        self.__name__, self.__doc__, self.__module__ = func.__name__, func.__doc__, func.__module__

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        from .options import OPTION_NAMES

        return tuple(n for n in self.chosen or OPTION_NAMES if n not in self.exclude)

    def __call__(self, **kwargs):
        return self.func(options={name: kwargs.pop(name) for name in self.names}, **kwargs)

    @functools.cached_property
    def __signature__(self) -> inspect.Signature:
        own = [p for p in inspect.signature(self.func, eval_str=True).parameters.values() if p.name != "options"]
        return inspect.Signature(own + [_option_parameter(name) for name in self.names])

    @functools.cached_property
    def __annotations__(self) -> dict:
        return {p.name: p.annotation for p in self.__signature__.parameters.values()}


def with_options(*names: str, exclude: tuple[str, ...] = ()) -> Callable:
    """Give a command the CLI options ``names`` of :class:`EditOptions` (none named: all but
    ``exclude``); the command receives the values as ``options``, a dict to build
    :class:`EditOptions` from inside :func:`_run`."""
    return lambda func: _OptionsCommand(func, names, exclude)


def _edit_options(values: dict):
    from .options import EditOptions

    return EditOptions(**values)


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
            console.print(f"[bold red]error:[/] {exc.render(cli_name)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: nothing was written")
            raise typer.Exit(130) from None
        finally:
            _show_warnings(caught)


@app.command(epilog="Example: rs-geo-edit plan scene.tif --aoi rois.geojson --preview plan.png")
@with_options("prompt", "prompt_field", "layer", "margin", "margin_frac", "margin_max", "max_side", "rgb_bands",
              "overwrite")
def plan(
    scene: Annotated[Path, typer.Argument(help="Input raster (GeoTIFF).")],
    aoi: AoiOpt,
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a PNG of windows and ROIs over the scene."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    options: Optional[dict] = None,
) -> None:
    """Show the window plan of an edit: windows, sizes, ROI pixels, reduced-resolution factors."""

    def body():
        import json

        from .pipeline import plan_scene

        config = _edit_options(options).to_config()
        if preview is not None:
            from .geo.raster import check_output_path

            check_output_path(preview, [scene, aoi], config.output.overwrite, role="preview")
        result = plan_scene(scene, aoi, config)
        summary = result.as_dict()
        if as_json:
            out.print_json(json.dumps(summary))
        else:
            _print_plan(summary, config.windows.max_side)
        if preview is not None:
            from .geo.preview import render_plan

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
                  "Raise --max-side, or set it to 0, to edit them at full resolution (more time).")


def _progress_printer(quiet: bool):
    """A rich progress bar fed by the pipeline's progress callback; returns (context, callback)."""
    import contextlib

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if quiet:
        return contextlib.nullcontext(), None
    bar = Progress(TextColumn("{task.fields[stage]:<7}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.description}"),
                   console=console, transient=False)
    task = bar.add_task("", total=1.0, stage="plan")

    def callback(event) -> None:
        where = f"window {event.window} " if event.window is not None else ""
        bar.update(task, completed=event.fraction, stage=event.stage, description=f"{where}{event.message}")

    return bar, callback


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _print_result(result) -> None:
    record = result.record
    timings = record["timings"]
    out.print(f"[green]wrote[/] {result.output}" + (f" and {result.provenance}" if result.provenance else ""),
              highlight=False)
    for w in record["windows"]:
        if "skipped" in w:
            out.print(f"  window {w['index']}: skipped ({w['skipped']})")
            continue
        model = next((m for m in record["editor"].get("windows", []) if m.get("window") == w["index"]), {})
        train = ("trained in {:.1f} s".format(model["train_s"]) if model.get("trained")
                 else "{} tile run(s) in {:.1f} s".format(model["runs"], model["seconds"]) if "runs" in model
                 else "filled from its own patches in {:.1f} s".format(model["fill_s"]) if "fill_s" in model
                 else "model from the cache" if model else "")
        sample = f", sampled in {model['sample_s']:.1f} s" if "sample_s" in model else ""
        out.print(f"  window {w['index']}: {w['width']} x {w['height']} px, {w['roi_pixels']} ROI px; {train}{sample}",
                  highlight=False)
        fig = w.get("realism", {})
        out.print(f"    realism: luminance detail {_fmt(fig.get('luminance'))}, colour detail "
                  f"{_fmt(fig.get('colour'))}, seam ratio {_fmt(fig.get('seam'))} "
                  "(targets 0.8-1.2, <= 1.3, <= 1.1)", highlight=False)
    out.print(f"  total {timings['total_s']:.1f} s (plan {timings['plan_s']:.1f}, edit {timings['edit_s']:.1f}, "
              f"write {timings['write_s']:.1f})", highlight=False)


@app.command(epilog=EXAMPLES)
@with_options()
def edit(
    scene: Annotated[Path, typer.Argument(help="Input raster (GeoTIFF).")],
    aoi: AoiOpt,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output GeoTIFF \\[default: <scene>_edited.tif]."),
    quiet: QuietOpt = False,
    backend: Optional[str] = typer.Option(
        None, "--backend", help="Edit on a remote service, e.g. https://gpu-server:8765: only the windows around "
                                "the ROIs travel; the output is written here."),
    token: Optional[str] = typer.Option(None, "--token", envvar="RS_GEO_EDIT_TOKEN",
                                        help="Bearer token of --backend (or RS_GEO_EDIT_TOKEN)."),
    options: Optional[dict] = None,
) -> None:
    """Edit the ROIs of a scene and write a GeoTIFF (plus a provenance JSON beside it)."""

    def body():
        from .api import edit_scene
        from .pipeline import default_output

        config = _edit_options(options).to_config()
        target = output or default_output(scene)
        if backend:
            _edit_remotely(scene, aoi, target, config, backend, token, quiet)
            return
        bar, callback = _progress_printer(quiet)
        with bar:
            result = edit_scene(scene, aoi, target, config, progress=callback)
        _print_result(result)

    _run(body)


def _edit_remotely(scene: Path, aoi: Path, target: Path, config, url: str, token: Optional[str], quiet: bool) -> None:
    from .jobs.client import Backend, edit_remotely

    bar, callback = _progress_printer(quiet)
    with bar:
        result = edit_remotely(scene, aoi, target, config, Backend(url, token), progress=callback)
    transfer = result.job.get("transfer") or {}
    out.print(f"[green]wrote[/] {result.output}" + (f" and {result.provenance}" if result.provenance else "")
              + f" (remote job {result.job['id']}: {transfer.get('uploaded_bytes', 0) / 1e6:.2f} MB up, "
              f"{transfer.get('downloaded_bytes', 0) / 1e6:.2f} MB down)", highlight=False)


@app.command(epilog="Example: rs-geo-edit serve --port 8765 --workers 1   (then: rs-geo-edit serve --print-token)")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; other than loopback needs --allow-remote."),
    port: int = typer.Option(8765, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", help="Concurrent jobs (worker processes); 1 per GPU is sensible."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow binding a non-loopback address."),
    print_token: bool = typer.Option(False, "--print-token", help="Print the bearer token and exit."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Job database folder \\[default: ~/.local/share/rs-geo-edit]."),
    config_dir: Optional[Path] = typer.Option(None, "--config-dir", help="Token folder \\[default: ~/.config/rs-geo-edit]."),
    allow_host: Optional[list[str]] = typer.Option(None, "--allow-host", help="Also accept requests whose Host header is NAME (repeatable), e.g. the machine's name when bound with --allow-remote; loopback names and the bound address are always accepted."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="TLS certificate (PEM) to serve https."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="TLS private key (PEM) of --tls-cert."),
    insecure_http: bool = typer.Option(False, "--insecure-http",
                                       help="With --allow-remote: serve plain http (trusted network or a TLS proxy)."),
    upload_quota_mb: float = typer.Option(8192, "--upload-quota-mb", help="Per-job quota of uploaded windows, MB."),
    retention_hours: float = typer.Option(72, "--retention-hours",
                                          help="Remove finished jobs' uploaded and result files after this long."),
) -> None:
    """Run the local job service: submit, follow and cancel edits over HTTP.

    The QGIS plugin talks to it. Jobs survive restarts; OpenAPI docs at http://HOST:PORT/docs."""

    def body():
        from .config import default_config_dir, default_data_dir
        from .errors import IncompatibleOptions
        from .jobs.security import check_binding
        from .jobs.service import load_or_create_token
        from .jobs.transfer import TransferLimits

        token = load_or_create_token(config_dir or default_config_dir())
        if print_token:
            out.print(token, highlight=False)
            return
        check_binding(host, allow_remote, tls_cert, tls_key, insecure_http)
        if workers < 1:
            raise IncompatibleOptions("--workers must be >= 1")
        limits = TransferLimits(quota_bytes=int(upload_quota_mb * (1 << 20)), retention_s=retention_hours * 3600)
        _serve(host, port, workers, data_dir or default_data_dir(), token, tuple(allow_host or ()), limits, tls_cert, tls_key)

    _run(body)


def _serve(host: str, port: int, workers: int, data_dir: Path, token: str, extra_hosts: tuple[str, ...], limits,
           tls_cert: Optional[Path], tls_key: Optional[Path]) -> None:
    import uvicorn

    from .jobs.layout import JobLayout
    from .jobs.service import allowed_hosts, create_app
    from .jobs.store import JobStore
    from .jobs.supervisor import WorkerPool

    data_dir.mkdir(parents=True, exist_ok=True)
    layout = JobLayout(data_dir)
    store = JobStore(layout.database)
    requeued = store.recover()
    if requeued:
        console.print(f"re-queued {len(requeued)} interrupted job(s): {', '.join(requeued)}")
    layout.device_info.unlink(missing_ok=True)
    pool = WorkerPool(store, data_dir, workers).start()
    scheme = "https" if tls_cert else "http"
    console.print(f"rs-geo-edit service on {scheme}://{host}:{port} ({workers} worker(s), jobs in {store.path})")
    tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert else {}
    try:
        uvicorn.run(create_app(store, token, data_dir, workers, pool=pool, hosts=allowed_hosts(host, extra_hosts),
                               limits=limits), host=host, port=port, log_level="warning", **tls)
    finally:
        pool.stop()


@app.command("eval", epilog="Examples:\n\n  rs-geo-edit eval scene_edited.tif --source scene.tif --aoi rois.geojson --prompt forest\n\n"
                             "  rs-geo-edit eval snow.tif --source scene.tif --aoi rois.geojson --judge rsge-judge\n\n"
                             "  rs-geo-edit eval sinddm.tif instruct.tif --source scene.tif --aoi rois.geojson --json cmp.json")
@with_options("prompt", "prompt_field", "layer", "feather", "device", "margin", "margin_frac", "margin_max",
              "max_side", "rgb_bands")
def eval_command(
    outputs: Annotated[List[Path], typer.Argument(help="Edited GeoTIFF(s) of the source, e.g. one per engine.")],
    source: Annotated[Path, typer.Option("--source", "-s", help="The scene it was edited from.")],
    aoi: AoiOpt,
    judge: Optional[str] = typer.Option(
        None, "--judge", help="The CLIP that scores the edits (any --clip name, or none): by default one that guided "
                              "none of them (rsge-judge for rsge-landcover edits, ViT-L-14:openai for RemoteCLIP "
                              "ones). Naming the guide itself scores its own objective, with a warning."),
    unguided: Optional[Path] = typer.Option(
        None, "--unguided", help="The unguided edit of the same seed and window to measure the gain against "
                                 "\\[default: made here from the output's provenance, for a SinDDM text edit]."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics as JSON."),
    options: Optional[dict] = None,
) -> None:
    """Score edits per ROI: judge score and its gain over the unguided edit, fidelity, seams, realism.

    The judge is a CLIP other than the one that guided the edit (--judge). It scores (100 x cosine
    against the prompt) the edited crop, the source crop and the unguided edit of the same seed and
    window (made here from the output's provenance: same parameters, no guidance); the gain is the
    edit's score minus the unguided one's. Also: the fraction of identical pixels outside the ROIs
    and blend band (--feather: the edit's), seam-gradient ratio, boundary step and the realism
    figures. Give the window options the edit had. Several outputs are scored on the same ROIs."""

    def body():
        import json
        import tempfile

        from .editors import resolve_device
        from .evaluate import evaluate_outputs
        from .files import atomic_path

        config = _edit_options(options).to_config()
        weights = config.guidance.weights_dir
        with tempfile.TemporaryDirectory(prefix="rs-geo-edit-eval-") as scratch:
            reports = evaluate_outputs(list(outputs), source, aoi, config, judge, unguided=unguided,
                                       device=resolve_device(config.device),
                                       weights_dir=Path(weights) if weights else None, scratch=Path(scratch))
        _print_eval(reports, source)
        if json_out:
            document = reports[0] if len(reports) == 1 else {"source": str(source), "aoi": str(aoi), "outputs": reports}
            with atomic_path(json_out) as tmp:
                tmp.write_text(json.dumps(document, indent=2, default=float))
            console.print(f"metrics written to {json_out}")

    _run(body)


def _print_eval(reports: list[dict], source: Path) -> None:
    from rich.table import Table

    several = len(reports) > 1
    for report in reports:
        if report["judge"] is not None:
            guide = report["guide"] or ("no CLIP" if report["provenance"] else "an unknown model (no provenance)")
            made = (f"made in {report['unguided_s']:.1f} s from its provenance" if report["unguided_s"] is not None
                    else report["unguided"] or "none (not a SinDDM text edit)")
            out.print(f"{Path(report['output']).name}: guided by {guide}, judged by {report['judge']['name']}"
                      + (" (the guide itself: its own objective)" if report["judge_is_guide"] else "")
                      + f"; unguided reference: {made}", highlight=False)
    table = Table(title=f"evaluation of {reports[0]['output']}" if not several else f"{len(reports)} edits of {source}")
    columns = ("feature", "prompt", "ROI px", "judge edit", "judge unguided", "gain", "judge source", "fidelity",
               "luminance", "colour", "seam", "step")
    for col in (("output", "engine") if several else ()) + columns:
        table.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    for report in reports:
        for r in report["rois"]:
            first = (Path(report["output"]).name, report["engine"] or "-") if several else ()
            table.add_row(*first, str(r["feature"]), r["prompt"] or "-", str(r["roi_pixels"]),
                          *(fmt(r.get(k)) for k in ("clip_score_edit", "clip_score_unguided", "clip_gain",
                                                    "clip_score_source")),
                          *(fmt(r[k]) for k in ("outside_fidelity", "luminance_detail", "colour_detail", "seam_ratio",
                                                "boundary_step")))
    out.print(table)


weights_app = typer.Typer(help="CLIP weights for text mode: list, fetch, verify.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list() -> None:
    """Known CLIP weights and where each is found (weights folder, hub cache) or that it is missing."""

    def body():
        from .config import GuidanceConfig
        from .guidance.clip import KNOWN, parse_spec, resolve_weights
        from .errors import WeightsNotFound

        folder = GuidanceConfig().weights_dir
        for name, (arch, filename) in KNOWN.items():
            try:
                where = resolve_weights(parse_spec(name), Path(folder) if folder else None, offline=True)
            except WeightsNotFound:
                where = "missing"
            out.print(f"{name:<22} {arch:<10} {filename:<26} {where}", highlight=False)

    _run(body)


@weights_app.command("fetch")
def weights_fetch(name: str = typer.Argument("remoteclip-vit-b-32", help="A RemoteCLIP name (see weights list).")) -> None:
    """Download RemoteCLIP weights from the Hugging Face hub into its cache (needs the network)."""

    def body():
        from .guidance.clip import parse_spec, resolve_weights

        out.print(resolve_weights(parse_spec(name), None, offline=False), highlight=False)

    _run(body)


@weights_app.command("verify")
def weights_verify() -> None:
    """Check found weights against the sha256 recorded after their first successful load."""

    def body():
        from .config import GuidanceConfig
        from .errors import WeightsNotFound
        from .files import sha256_file
        from .guidance.clip import KNOWN, parse_spec, resolve_weights

        folder = GuidanceConfig().weights_dir
        bad = 0
        for name in KNOWN:
            try:
                path = Path(resolve_weights(parse_spec(name), Path(folder) if folder else None, offline=True))
            except WeightsNotFound:
                continue
            marker = path.with_name(path.name + ".sha256")
            if not marker.is_file():
                out.print(f"{name}: {path} (no checksum recorded yet: load it once)", highlight=False)
                continue
            ok = marker.read_text().split()[0] == sha256_file(path)
            bad += not ok
            out.print(f"{name}: {path} {'OK' if ok else 'CHANGED since first load'}", highlight=False)
        if bad:
            raise typer.Exit(1)

    _run(body)


@app.command(epilog="Examples:\n\n  rs-geo-edit batch --manifest jobs.csv --out-dir edited/\n\n"
                    "  rs-geo-edit batch --scenes 'tiles/*.tif' --aoi rois.gpkg --out-dir edited/ --executor ray --address auto\n\n"
                    "  rs-geo-edit batch --scenes 'ortho/*.tif' --aoi rois.gpkg --out-dir edited/ --model-scope scene "
                    "--split-windows --executor ray --cache-dir /shared/cache")
@with_options()
def batch(
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for the outputs and summary.csv/json."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="CSV or JSON lines: scene, aoi, prompt, mode, output, seed."),
    scenes: Optional[str] = typer.Option(None, "--scenes", help="Glob of scenes (quote it), with --aoi."),
    aoi: Optional[Path] = typer.Option(None, "--aoi", "-a", help="One AOI for every --scenes scene it intersects."),
    force: bool = typer.Option(False, "--force", help="Redo scenes whose outputs are complete."),
    executor: str = typer.Option("local", "--executor", help="local (default) or ray."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes (1 per GPU; 1 on CPU)."),
    address: str = typer.Option("auto", "--address", help="Ray: auto, local, or ray://host:port."),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help="Ray: GPUs per scene task."),
    split_windows: bool = typer.Option(False, "--split-windows",
                                       help="A task per ROI window once the scene's model is trained, for scenes "
                                            "with many ROIs (e.g. --model-scope scene --split-windows --workers 4); "
                                            "--cache-dir must be a folder every worker sees. Same output bytes."),
    make_pairs: bool = typer.Option(False, "--pairs", help="Make training pairs per scene (see rs-geo-edit pairs) "
                                                           "in OUT_DIR/<scene>/ instead of edited scenes."),
    chip: int = typer.Option(512, "--chip", help="--pairs: chip side, pixels."),
    variants: int = typer.Option(1, "--variants", help="--pairs: pairs per ROI (seeds --seed, --seed+1, ...)."),
    previews: bool = typer.Option(False, "--previews", help="--pairs: also write preview.png per pair."),
    quiet: QuietOpt = False,
    backend: Optional[str] = typer.Option(None, "--backend", help="Edit every scene on this remote service "
                                                                  "(only the windows travel)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="RS_GEO_EDIT_TOKEN",
                                        help="Bearer token of --backend (or RS_GEO_EDIT_TOKEN)."),
    options: Optional[dict] = None,
) -> None:
    """Run the same edit over many scenes; resumable; local processes or a Ray cluster.

    The edit options apply to every scene; a manifest's prompt, mode and seed columns override
    them per scene (a scene with a prompt and no mode runs text)."""

    def body():
        from .batch import check_split_windows, items_from_glob, read_manifest, run_batch
        from .executors import make_executor

        if (manifest is None) == (scenes is None):
            raise IncompatibleOptions("give either --manifest FILE or --scenes 'GLOB' (with --aoi)")
        if scenes is not None and aoi is None:
            raise IncompatibleOptions("--scenes needs --aoi: the AOI matched to every scene it intersects")
        edit_options = _edit_options(options)
        edit_options.to_config()  # every option checked before any scene is read
        runner = make_executor(executor, workers=workers, address=address, gpus_per_task=gpus_per_task)
        pairs = {"chip": chip, "variants": variants, "previews": previews} if make_pairs else None
        remote = {"url": backend, "token": token} if backend else None
        check_split_windows(split_windows, pairs, remote)
        items = read_manifest(manifest, out_dir) if manifest else items_from_glob(scenes, aoi, out_dir)
        bar, callback = _progress_printer(quiet)
        with bar:
            rows = run_batch(items, edit_options, out_dir, runner, force=force, progress=callback, pairs=pairs,
                             remote=remote, split_windows=split_windows)
        counts = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        out.print(f"{len(rows)} scene(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                  + f"; summary in {out_dir / 'summary.csv'}", highlight=False)
        for row in rows:
            if row["status"] in ("failed", "skipped"):
                console.print(f"[yellow]{row['status']}:[/] {row['scene']}: {row.get('error')}", highlight=False)
        if counts.get("failed"):
            raise typer.Exit(1)

    _run(body)


@app.command(epilog="Examples:\n\n"
                    "  rs-geo-edit pairs scene.tif --aoi rois.geojson --prompt 'flood the fields' --out-dir pairs/ "
                    "--engine instruct --variants 3\n\n"
                    "  rs-geo-edit pairs scene.tif --aoi rois.gpkg --mode regenerate --out-dir pairs/ --chip 256 --previews")
@with_options(exclude=("overwrite", "cog", "compress", "copy_from"))
def pairs(
    scene: Annotated[Path, typer.Argument(help="Input raster (GeoTIFF): the 'before' scene.")],
    aoi: AoiOpt,
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for the pair folders and pairs.jsonl."),
    chip: int = typer.Option(512, "--chip", help="Chip side, pixels, centred on each ROI (clamped to the scene)."),
    variants: int = typer.Option(1, "--variants", help="Pairs per ROI, with seeds --seed, --seed+1, ..."),
    previews: bool = typer.Option(False, "--previews", help="Also write preview.png (before | after) per pair."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo pair folders this run did not finish or that differ."),
    quiet: QuietOpt = False,
    options: Optional[dict] = None,
) -> None:
    """Make before/after training pairs: per ROI, pre.tif, post.tif and mask.tif chips + pairs.jsonl.

    Resumable: a rerun skips the pairs pairs.jsonl lists as finished with the same inputs."""

    def body():
        from .pairs import make_pairs

        config = _edit_options(options).to_config()
        bar, callback = _progress_printer(quiet)
        with bar:
            rows = make_pairs(scene, aoi, out_dir, config, chip=chip, variants=variants, previews=previews,
                              overwrite=overwrite, progress=callback)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        out.print(f"{len(rows)} pair(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                  + f"; records in {out_dir / 'pairs.jsonl'}", highlight=False)
        for row in rows:
            if row["status"] == "skipped":
                console.print(f"[yellow]skipped:[/] {row['id']}: {row['error']}", highlight=False)

    _run(body)


def sample_paths() -> tuple[Path, Path]:
    """The bundled sample scene and its AOI."""
    data = Path(__file__).resolve().parent / "data"
    return data / "aerial_3857.tif", data / "aerial_aoi.geojson"


@app.command(epilog="Example: rs-geo-edit demo --out-dir out --seed 3")
@with_options("seed", "device", "threads", "cache_dir", "overwrite")
def demo(
    out_dir: Path = typer.Option(Path("out"), "--out-dir", help="Folder for the demo's outputs."),
    options: Optional[dict] = None,
) -> None:
    """Edit the bundled aerial scene (regenerate, fast preset) and write a before/after PNG.

    Writes the GeoTIFF, its provenance JSON and the PNG to --out-dir and prints the timings; files
    already there are kept unless --overwrite. A second run reuses the trained model from the cache."""

    def body():
        from .api import edit_scene
        from .geo.preview import render_before_after
        from .geo.raster import check_output_path
        from .pipeline import check_outputs, plan_scene

        scene, aoi = sample_paths()
        config = _edit_options({**options, "mode": "regenerate", "preset": "fast"}).to_config()
        target = out_dir / "aerial_demo.tif"
        picture = out_dir / "aerial_demo_before_after.png"
        check_outputs(scene, aoi, target, config)
        check_output_path(picture, [scene, aoi], config.output.overwrite, role="before/after picture")
        out.print(f"demo: {scene.name} + {aoi.name}, mode regenerate, preset fast, seed {config.seed}, "
                  f"cache {config.cache_dir}", highlight=False)
        bar, callback = _progress_printer(False)
        with bar:
            result = edit_scene(scene, aoi, target, config, progress=callback)
        _print_result(result)
        render_before_after(scene, target, plan_scene(scene, aoi, config), picture)
        out.print(f"before/after: {picture}", highlight=False)

    _run(body)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point; a first argument that is not a command means ``edit``."""
    import signal

    if hasattr(signal, "pthread_sigmask"):
        # a signal mask is inherited: Ctrl-C must reach a CLI whose launcher had it blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    commands |= {g.name for g in app.registered_groups}
    if args and not args[0].startswith("-") and args[0] not in commands and "edit" in commands:
        args.insert(0, "edit")
    app(args=args, prog_name="rs-geo-edit")


if __name__ == "__main__":
    main()
