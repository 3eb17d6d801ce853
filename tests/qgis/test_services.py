"""The plugin's Qt-free services (preferences, remote-job registry, output naming): plain Python
over an in-memory store, importable without QGIS or Qt."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

QT_FREE = ("preferences", "remote_jobs", "naming", "entities", "errors")


@pytest.fixture(scope="module")
def pkg(plugin_dir):
    """The plugin package from the packaged zip, as QGIS would import it."""
    if str(plugin_dir) not in sys.path:
        sys.path.insert(0, str(plugin_dir))
    import rs_geo_edit_qgis

    return rs_geo_edit_qgis


def test_services_import_neither_qgis_nor_qt(plugin_dir):
    code = (f"import sys; sys.path.insert(0, {str(plugin_dir)!r})\n"
            + "".join(f"import rs_geo_edit_qgis.{name}\n" for name in QT_FREE)
            + "print([m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5', 'sip', 'osgeo')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_preferences_default_then_round_trip(pkg):
    from pathlib import Path

    from rs_geo_edit_qgis.entities import InstallSpec
    from rs_geo_edit_qgis.preferences import BackendSettings, MemoryStore, Preferences

    store = MemoryStore()
    prefs = Preferences(store)
    assert prefs.backend() == BackendSettings()
    assert prefs.install(Path("/p/venv"), "/usr/bin/python3") == InstallSpec(folder="/p/venv", python="/usr/bin/python3")
    chosen = BackendSettings(url="http://gpu:9000", authcfg="k3y9a1z", executable="/x/rs-geo-edit", autostart=True, remote=True)
    assert prefs.save_backend(chosen) is chosen
    spec = InstallSpec(folder="/v", python="/py", package="./backend", pip_args=("--no-deps", "-q"),
                       system_site_packages=True)
    prefs.save_install(spec)
    again = Preferences(store)       # what the next QGIS session reads
    assert again.backend() == chosen and again.install(Path("/other"), "/other/python") == spec
    # flags as QgsSettings writes them; the installer's pip arguments as one line
    assert store.values["autostart"] == "true" and store.values["install_pip_args"] == "--no-deps -q"
    # no secret among the settings: the credentials are an authentication configuration's id
    assert "token" not in store.values and store.values["authcfg"] == "k3y9a1z"


def test_a_plain_token_of_earlier_versions_is_read_then_forgotten(pkg):
    from rs_geo_edit_qgis.preferences import MemoryStore, Preferences

    store = MemoryStore({"url": "http://gpu:9000", "token": "s3cret", "remote": "true"})
    prefs = Preferences(store)
    assert prefs.plain_token() == "s3cret" and prefs.backend().authcfg == ""
    prefs.forget_plain_token()
    assert prefs.plain_token() == "" and "token" not in store.values and store.values["url"] == "http://gpu:9000"


def test_preferences_read_flags_stored_as_booleans(pkg):
    from rs_geo_edit_qgis.preferences import MemoryStore, Preferences

    settings = Preferences(MemoryStore({"remote": True, "autostart": "yes"})).backend()
    assert settings.remote and not settings.autostart
    assert not settings.starts_local


def test_backend_settings_port(pkg):
    from rs_geo_edit_qgis.client import BackendError
    from rs_geo_edit_qgis.preferences import BackendSettings

    assert BackendSettings(url="http://127.0.0.1:8770/").port == 8770
    with pytest.raises(BackendError, match="has no port"):
        BackendSettings(url="http://gpu-server").port


def _remote_job(job_id, **request):
    from rs_geo_edit_qgis.entities import Job

    return Job(id=job_id, state="done", output="scene_out.tif",
               request={"scene": "scene.tif", "windows": [{"index": 0}], **request})


def test_remote_jobs_remember_and_localise(pkg):
    from rs_geo_edit_qgis.entities import Job, LocalFiles
    from rs_geo_edit_qgis.preferences import MemoryStore
    from rs_geo_edit_qgis.remote_jobs import RemoteJobs

    store = MemoryStore()
    jobs = RemoteJobs(store)
    jobs.remember("a", LocalFiles(scene="/data/scene.tif", output="/data/scene_lake_1.tif"))
    jobs.remember("a", LocalFiles(scene="/else/scene.tif", output="/else/out.tif"))   # the first files stay
    again = RemoteJobs(store)                                                          # after a restart
    assert "a" in again and "b" not in again
    assert again.files("a") == LocalFiles(scene="/data/scene.tif", output="/data/scene_lake_1.tif")
    local = again.localise(_remote_job("a", prompt="a lake"))
    assert local.output == "/data/scene_lake_1.tif" and local.scene == "/data/scene.tif"
    assert local.request["prompt"] == "a lake"
    other = _remote_job("b")                                         # another machine's: as the server says
    assert again.localise(other) is other and again.files("b") is None
    mine = Job(id="a", state="done", output="/srv/out.tif", request={"scene": "/srv/scene.tif"})
    assert again.localise(mine) is mine                              # not a remote job: nothing to translate


def test_remote_jobs_keep_the_newest_and_survive_a_broken_entry(pkg):
    from rs_geo_edit_qgis.entities import LocalFiles
    from rs_geo_edit_qgis.preferences import MemoryStore
    from rs_geo_edit_qgis.remote_jobs import KEY, RemoteJobs

    store = MemoryStore()
    jobs = RemoteJobs(store, keep=3)
    for n in range(5):
        jobs.remember(f"j{n}", LocalFiles(scene=f"s{n}", output=f"o{n}"))
    assert list(json.loads(store.values[KEY])) == ["j2", "j3", "j4"]
    store.setValue(KEY, "{not json")
    assert "j4" not in jobs and jobs.files("j4") is None
    jobs.remember("k", LocalFiles(scene="s", output="o"))
    assert "k" in jobs


def test_output_is_named_for_the_edit_and_never_overwrites(pkg, tmp_path):
    from rs_geo_edit_qgis.naming import output_path

    scene = tmp_path / "scene.tif"
    assert output_path(scene, "dense forest", "text", 7) == tmp_path / "scene_dense_forest_7.tif"
    assert output_path(scene, None, "regenerate", 0) == tmp_path / "scene_regenerate_0.tif"
    assert output_path(scene, "x" * 60, "text", 1).name == f"scene_{'x' * 40}_1.tif"
    taken = tmp_path / "scene_a_lake_3.tif"
    taken.write_bytes(b"an earlier result")
    fresh = output_path(scene, "a lake", "text", 3)
    assert fresh != taken and fresh.parent == tmp_path and not fresh.exists()
    assert fresh.name.startswith("scene_a_lake_") and fresh.suffix == ".tif"
    assert taken.read_bytes() == b"an earlier result" and sorted(p.name for p in tmp_path.iterdir()) == [taken.name]
