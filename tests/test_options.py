"""One options schema: the CLI and the service give the same EditConfig for every option; the
bounds, the mode rule and option names in errors hold at every entry point."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import typer
from typer.testing import CliRunner

import rs_geo_edit
import rs_geo_edit.api
from conftest import InvertEditor, pixel_box, write_aoi, write_scene
from rs_geo_edit.cli import app, cli_name
from rs_geo_edit.config import make_config
from rs_geo_edit.errors import IncompatibleOptions
from rs_geo_edit.jobs.schema import REQUEST_LEVEL, JobRequest, api_name
from rs_geo_edit.jobs.inputs import job_inputs
from rs_geo_edit.options import SPEC_BY_NAME, SPECS, EditOptions, options_schema, options_schema_json

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = {"rgb_bands": "3,2,1", "device": "cpu", "prompt": "dense forest"}


def sample(spec):
    """A valid value of ``spec`` that differs from its default."""
    if spec.name in SPECIAL:
        return SPECIAL[spec.name]
    if spec.choices is not None:
        others = [c for c in spec.choices if c != spec.default]
        if not others:
            pytest.skip(f"{spec.name} has one choice today")
        return others[-1]
    if spec.type is bool:
        return not spec.default
    if spec.type in (int, float):
        return spec.type(spec.maximum)
    return f"/data/{spec.name}.value"


def cli_args(spec, value):
    if spec.type is bool:
        declared = next((f for f in spec.flags if "/" in f), None)
        if declared:
            on, off = declared.split("/")
            return [on if value else off]
        return [cli_name(spec.name)]
    return [cli_name(spec.name), str(value)]


def config_from_cli(args, monkeypatch):
    """The EditConfig the real ``edit`` command hands to edit_scene for ``args``."""
    seen = []

    def fake_edit_scene(scene, aoi, output, config, **kwargs):
        seen.append(config)
        raise typer.Exit(0)

    monkeypatch.setattr(rs_geo_edit.api, "edit_scene", fake_edit_scene)
    result = CliRunner().invoke(app, ["edit", "scene.tif", "--aoi", "rois.gpkg", "--quiet", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def config_from_service(body):
    """The EditConfig the service's worker runs for a request ``body`` (validated as the API does)."""
    request = JobRequest.model_validate({"scene": "scene.tif", "aoi": "rois.gpkg", **body})
    return job_inputs(request.model_dump()).config


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_cli_and_service_give_the_same_config_for_every_option(spec, monkeypatch):
    value = sample(spec)
    from_cli = config_from_cli(cli_args(spec, value), monkeypatch)
    from_service = config_from_service({"options": {spec.name: value}})
    from_library = EditOptions(**{spec.name: value}).to_config()
    assert from_cli.to_dict() == from_service.to_dict() == from_library.to_dict()
    assert from_cli.to_dict() != make_config().to_dict(), f"{spec.name} does not reach the EditConfig"
    if spec.name in REQUEST_LEVEL:
        assert config_from_service({spec.name: value}).to_dict() == from_cli.to_dict()


def test_defaults_are_the_config_defaults(monkeypatch):
    assert config_from_cli([], monkeypatch).to_dict() == make_config().to_dict()
    assert config_from_service({}).to_dict() == make_config().to_dict()


def test_a_prompt_without_a_mode_runs_text_everywhere(monkeypatch):
    assert config_from_cli(["--prompt", "flooded fields"], monkeypatch).mode == "text"
    assert config_from_service({"prompt": "flooded fields"}).mode == "text"
    assert config_from_service({"options": {"prompt": "flooded fields"}}).mode == "text"
    assert config_from_service({"prompt": "x", "mode": "copy"}).mode == "copy"
    assert config_from_cli([], monkeypatch).mode == "regenerate"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.minimum is not None], ids=lambda s: s.name)
def test_bounds_refused_naming_option_and_bound(spec):
    too_big = spec.type(spec.maximum * 2 + 2)  # even, so only the bound is wrong
    with pytest.raises(IncompatibleOptions) as caught:
        EditOptions(**{spec.name: too_big})
    assert caught.value.option == spec.name
    assert f"--{spec.name.replace('_', '-')} " in caught.value.render(cli_name)
    with pytest.raises(Exception) as refused:
        JobRequest.model_validate({"scene": "s.tif", "aoi": "a.gpkg", "options": {spec.name: too_big}})
    errors = refused.value.errors()
    assert errors[0]["loc"] == ("options", spec.name) and errors[0]["ctx"]["le"] == spec.maximum


def test_cli_refuses_a_bound_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rs_geo_edit.cli", "edit", str(tmp_path / "s.tif"), "--aoi",
                           str(tmp_path / "a.gpkg"), "--steps", "1000000000"], capture_output=True, text=True,
                          timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and errors == ["error: --steps 1000000000 is out of range: use 1 to 1000000"]
    assert EditOptions(steps=200_000).steps == 200_000


@pytest.mark.parametrize("key", ["start_mid", "start_fine", "start_large"])
@pytest.mark.parametrize("value", [0.0, 1.5])
def test_sampling_starts_outside_their_range_are_refused_by_name(key, value):
    """The sampling starts are fractions of the trained start; the library's model overrides are
    checked against the same declared bounds as the option, with the same message."""
    from rs_geo_edit.config import make_config

    with pytest.raises(IncompatibleOptions, match=rf"^{key} {value} is out of range: use 0.01 to 1$"):
        make_config("fast", model_overrides={key: value})
    with pytest.raises(IncompatibleOptions, match=rf"^{key} {value} is out of range: use 0.01 to 1$"):
        EditOptions(**{key: value})
    assert getattr(make_config("fast", model_overrides={key: 1.0}).model, key) == 1.0   # the bound itself is allowed


@pytest.mark.parametrize("key,value,bounds", [("rim_hold", -3, "0 to 1"), ("copy_grain", -2, "1 to 4"),
                                              ("copy_hold", 1.5, "0 to 1"), ("copy_wiggle", 2, "0 to 1"),
                                              ("copy_weight", -0.1, "0 to 1"), ("large_px", -1, "0 to 16384"),
                                              ("checkpoint_every", 0, "1 to 10000000"),
                                              ("lr_decay_every", 0, "1 to 10000000")])
def test_every_model_setting_is_an_option_checked_for_overrides_too(key, value, bounds):
    """A model setting is declared once: an option of the schema (so the CLI, the service and
    Processing offer it) whose bounds also hold for the library's overrides and the benches."""
    from rs_geo_edit.config import ModelConfig, make_config

    assert key in SPEC_BY_NAME and SPEC_BY_NAME[key].minimum is not None
    with pytest.raises(IncompatibleOptions, match=rf"^{key} .* is out of range: use {bounds}$"):
        make_config("fast", model_overrides={key: value})
    with pytest.raises(IncompatibleOptions, match=rf"^{key} .* is out of range: use {bounds}$"):
        EditOptions(**{key: value})
    # every field of the model settings is an option (scope under its public name)
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    assert names - set(SPEC_BY_NAME) == {"scope"} and "model_scope" in SPEC_BY_NAME


def test_presets_list_what_they_change_and_the_defaults_leave_later_ideas_off():
    """``paper`` is the SinDDM reference: it lists only its GPU-sized training; the sampling
    ideas added since are off by default and ``fast`` turns them on."""
    from rs_geo_edit.config import PRESETS, ModelConfig, make_config

    plain, paper, fast = ModelConfig(), make_config("paper").model, make_config("fast").model
    assert (plain.novelty, plain.start_mid, plain.start_fine, plain.large_px, plain.rim_hold, plain.copy_hold,
            plain.copy_wiggle, plain.copy_grain, plain.chroma_radius, plain.scale_power) == (1, 1, 1, 0, 0, 0, 0, 1, 0, 0)
    assert not set(PRESETS["paper"]) & {"novelty", "start_mid", "start_fine", "large_px", "rim_hold", "copy_hold",
                                        "copy_wiggle", "copy_grain", "chroma_radius", "scale_power"}
    assert paper.width == 160 and paper.novelty == 1.0 and paper.rim_hold == 0.0
    assert fast.novelty == 0.4 and fast.large_px == 300 and fast.copy_grain == 1.5 and fast.width == 48
    assert (fast.net_scales, fast.steps, plain.net_scales, paper.net_scales) == (1, 600, 0, 0)
    # text mode: the net draws every scale, as fast did before; an override still wins
    text = make_config("fast", mode="text").model
    assert (text.net_scales, text.steps, text.novelty) == (0, 1000, 0.6)
    assert make_config("fast", {"net_scales": 2, "steps": 50}, mode="text").model.net_scales == 2
    assert make_config("paper", mode="text").model == paper


def test_errors_name_options_in_each_entry_points_words():
    error = IncompatibleOptions("`max_side` 16 is too small: use 32 or more")
    assert str(error) == "max_side 16 is too small: use 32 or more"
    assert error.render(cli_name) == "--max-side 16 is too small: use 32 or more"
    assert error.render(api_name) == "options.max_side 16 is too small: use 32 or more"
    assert IncompatibleOptions("`prompt` missing").render(api_name) == "prompt missing"
    with pytest.raises(IncompatibleOptions, match="unknown option.*colour"):
        EditOptions.from_dict({"colour": "red"})
    with pytest.raises(IncompatibleOptions, match="rgb_bands"):
        EditOptions(rgb_bands="3,2")


def test_schema_is_json_with_bounds_for_every_number_and_the_committed_file_is_fresh():
    schema = options_schema()
    assert [o["name"] for o in schema] == [s.name for s in SPECS]
    for entry in schema:
        assert set(entry) == {"name", "type", "default", "minimum", "maximum", "choices", "help", "group"}
        assert entry["type"] in ("int", "float", "bool", "str") and entry["group"] in ("basic", "advanced")
        if entry["type"] in ("int", "float"):
            assert entry["minimum"] is not None and entry["maximum"] is not None, entry["name"]
    assert next(o for o in schema if o["name"] == "mode")["help"].endswith(
        "Default: text when a prompt is given, else regenerate.")
    committed = (ROOT / "qgis_plugin" / "options_schema.json").read_text()
    assert json.loads(committed) == schema and committed == options_schema_json(), \
        "qgis_plugin/options_schema.json is stale: run scripts/export_options.py"


def test_batch_help_lists_mode_choices_and_the_new_options():
    result = CliRunner().invoke(app, ["batch", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--blend", "--feather", "--strength", "--margin", "--rgb-bands", "--clip-views", "--no-ensemble"):
        assert flag in result.output
    assert "One of: regenerate, copy, text. Default: text when a prompt is given, else regenerate." in result.output


def test_edit_scene_from_the_package_takes_a_dict_of_options(tmp_path):
    scene = write_scene(tmp_path / "s.tif", width=64, height=64, blocksize=32)
    aoi = write_aoi(tmp_path / "a.geojson", [pixel_box(scene, 20, 20, 40, 40)])
    result = rs_geo_edit.edit_scene(scene, aoi, tmp_path / "o.tif", {"feather": 0, "margin": 4},
                                    editor=InvertEditor())
    assert result.record["parameters"]["blend"]["band_px"] == 0
    assert result.record["parameters"]["windows"]["margin_px"] == 4
    with rasterio.open(scene) as a, rasterio.open(tmp_path / "o.tif") as b:
        changed = (a.read() != b.read()).any(axis=0)
    rows, cols = np.nonzero(changed)
    assert rows.min() >= 20 and rows.max() < 40 and cols.min() >= 20 and cols.max() < 40
