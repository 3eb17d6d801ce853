"""The service's files: the layout that spells every job, upload and result path, the request to
inputs step, and the download count kept by the store."""

import json

import pytest

from rs_geo_edit.errors import RsGeoEditError
from rs_geo_edit.jobs.inputs import JobInputs, job_inputs, output_path, uploaded_windows
from rs_geo_edit.jobs.layout import JobLayout, inline_aoi
from rs_geo_edit.jobs.store import JobStore

AOI = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"window": 1, "prompt": "forest"},
     "geometry": {"type": "Polygon", "coordinates": [[[0.1, 0.1], [0.1, 1.3], [1.7, 1.3], [0.1, 0.1]]]}},
    {"type": "Feature", "properties": {"window": 0, "prompt": None},
     "geometry": {"type": "Polygon", "coordinates": [[[5, 5], [5, 6], [6, 6], [5, 5]]]}}]}


def test_every_path_lies_in_the_data_folder_and_none_is_spelled_twice(tmp_path):
    layout = JobLayout(tmp_path)
    paths = [layout.database, layout.device_info, layout.upload("ab12"), layout.upload_state("ab12"),
             layout.job("j1"), layout.results("j1"), layout.manifest("j1"), layout.result_window("j1", 3),
             inline_aoi(layout.job("j1"))]
    assert len(set(paths)) == len(paths)
    assert all(p.is_relative_to(tmp_path) for p in paths)
    assert layout.results("j1").parent == layout.job("j1") and layout.job("j1").parent == layout.jobs
    assert layout.manifest("j1").parent == layout.result_window("j1", 3).parent == layout.results("j1")
    assert layout.upload("ab12").parent == layout.upload_state("ab12").parent == layout.uploads
    assert not list(tmp_path.iterdir())  # naming a path creates nothing


def test_a_staging_folder_is_fresh_hidden_and_removed(tmp_path):
    layout = JobLayout(tmp_path)
    with layout.staging("submit") as one, layout.staging("submit") as two:
        assert one != two and one.parent == layout.jobs and one.name.startswith(".submit-")
        one.mkdir(parents=True)
        (one / "aoi.geojson").write_text("{}")
    assert not one.exists()
    with pytest.raises(RuntimeError), layout.staging("plan") as three:
        three.mkdir(parents=True)
        raise RuntimeError("the request failed")
    assert not three.exists()


def test_job_inputs_writes_an_inline_aoi_atomically_and_names_the_output(tmp_path):
    request = {"scene": str(tmp_path / "scene.tif"), "aoi": AOI, "output": None,
               "options": {"seed": 5, "prompt": "forest"}}
    inputs = job_inputs(request, tmp_path / "job")
    assert isinstance(inputs, JobInputs)
    assert inputs.aoi == inline_aoi(tmp_path / "job") and json.loads(inputs.aoi.read_text()) == AOI
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["aoi.geojson"]  # no temporary left
    assert inputs.scene == tmp_path / "scene.tif" and inputs.output == tmp_path / "scene_edited.tif"
    assert inputs.config.seed == 5
    assert job_inputs(request).aoi is None and not (tmp_path / "elsewhere").exists()
    assert job_inputs({**request, "aoi": str(tmp_path / "rois.gpkg")}).aoi == tmp_path / "rois.gpkg"
    assert output_path({**request, "output": "/data/out.tif"}).as_posix() == "/data/out.tif"
    with pytest.raises(RsGeoEditError):
        job_inputs({**request, "options": {"steps": -3}})


def test_uploaded_windows_come_in_index_order_with_their_own_rois(tmp_path):
    layout = JobLayout(tmp_path)
    request = {"aoi": AOI, "windows": [{"upload": "u1", "index": 1, "col_off": 40, "row_off": 8},
                                       {"upload": "u0", "index": 0, "col_off": 0, "row_off": 2}]}
    zero, one = uploaded_windows(request, layout)
    assert (zero.index, zero.path, zero.col_off, zero.row_off) == (0, layout.upload("u0"), 0, 2)
    assert (one.index, one.path, one.col_off, one.row_off) == (1, layout.upload("u1"), 40, 8)
    assert zero.features == [AOI["features"][1]] and one.features == [AOI["features"][0]]


def test_the_store_counts_downloaded_bytes(tmp_path):
    store = JobStore(JobLayout(tmp_path).database)
    job = store.create({"scene": "s.tif", "transfer": {"uploaded_bytes": 10, "downloaded_bytes": 0}})
    store.add_downloaded(job["id"], 300)
    store.add_downloaded(job["id"], 45)
    assert store.get(job["id"])["request"]["transfer"] == {"uploaded_bytes": 10, "downloaded_bytes": 345}
