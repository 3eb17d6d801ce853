"""Fault bench: every failure case of the reliability issue, tried against a live service.

Starts `rs-geo-edit serve` on 127.0.0.1 (a free port; its own temporary data, config and cache
folders), runs each case as a user or a misbehaving client would, and prints one line per case:
`held` or `NOT HELD`, with the figure that decides it (latency, status code, files intact).
The CLI cases run the real command in a subprocess. Exit status 1 if any case is not held.

Usage: .venv/bin/python scripts/bench/faults.py [--skip-load]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import pixel_box, write_aoi, write_scene  # noqa: E402
from live_service import TINY, Service, health, wait_for  # noqa: E402

HUGE = {"steps": 200_000, "width": 16, "crop": 32, "batch": 2, "threads": 1}
CLI_TINY = ["--steps", "30", "--width", "16", "--crop", "32", "--batch", "2", "--threads", "1"]


class Bench:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.scene = write_scene(tmp / "scene.tif", width=96, height=96, blocksize=32)
        self.aoi = write_aoi(tmp / "aoi.geojson", [pixel_box(self.scene, 30, 30, 60, 60)])
        self.svc: Service = None
        self.results: list[tuple[str, bool, str]] = []

    def case(self, name: str, fn) -> None:
        t0 = time.monotonic()
        try:
            held, figure = fn()
        except Exception as exc:  # a case that crashes is a case not held; the bench goes on
            held, figure = False, f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.results.append((name, held, figure))
        print(f"{name:<44} {'held' if held else 'NOT HELD':<9} {figure}  [{time.monotonic() - t0:.1f} s]", flush=True)

    def body(self, **kw) -> dict:
        return {"scene": str(self.scene), "aoi": str(self.aoi), "output": str(self.tmp / "never.tif"), **kw}

    def post(self, body=None, **kw) -> httpx.Response:
        return self.svc.client.post("/jobs", json=body, **kw) if body is not None else self.svc.client.post("/jobs", **kw)

    def cli(self, *args, timeout=600) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RS_GEO_EDIT_CACHE": str(self.tmp / "cli-cache")}
        return subprocess.run([sys.executable, "-m", "rs_geo_edit.cli", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=timeout)

    # ------------------------------------------------------------------------------------- CLI

    def sidecar_kept(self):
        out = self.tmp / "side" / "out.tif"
        out.parent.mkdir()
        sidecar = out.with_suffix(".json")
        sidecar.write_text('{"mine": true}')
        proc = self.cli("edit", self.scene, "--aoi", self.aoi, "-o", out, *CLI_TINY)
        kept = sidecar.read_text() == '{"mine": true}'
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        named = len(errors) == 1 and str(sidecar) in errors[0] and "--overwrite" in errors[0]
        return proc.returncode != 0 and kept and not out.exists() and named, \
            f"exit {proc.returncode}, out.json intact: {kept}, message: {(errors or [proc.stderr])[0][:110]!r}"

    def cache_spares_user_files(self):
        cache_dir = self.tmp / "my-folder"
        (cache_dir / "notes").mkdir(parents=True)
        (cache_dir / "notes" / "n.txt").write_text("mine")
        (cache_dir / "big.bin").write_bytes(os.urandom(2 << 20))
        outs = []
        for seed, steps in ((1, "30"), (2, "31")):  # two models, a cap below one: every save evicts
            out = self.tmp / f"cache-{seed}.tif"
            proc = self.cli("edit", self.scene, "--aoi", self.aoi, "-o", out, "--cache-dir", cache_dir,
                            "--cache-max-gb", "0.000001", "--steps", steps, *CLI_TINY[2:])
            outs.append(proc.returncode)
        intact = (cache_dir / "notes" / "n.txt").read_text() == "mine" and (cache_dir / "big.bin").stat().st_size == 2 << 20
        return intact and outs == [0, 0], f"runs exit {outs}, notes folder and 2 MB file intact: {intact}"

    def sigkill_cli_leaves_no_partial(self):
        """SIGKILL while the edited copy is being written (its temporary file exists): the worst moment."""
        big = write_scene(self.tmp / "big.tif", width=3072, height=3072, blocksize=256)
        aoi = write_aoi(self.tmp / "big.geojson", [pixel_box(big, 1500, 1500, 1530, 1530)])
        out_dir = self.tmp / "killed"
        out_dir.mkdir()
        out = out_dir / "out.tif"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RS_GEO_EDIT_CACHE": str(self.tmp / "kill-cache")}
        proc = subprocess.Popen([sys.executable, "-m", "rs_geo_edit.cli", "edit", str(big), "--aoi", str(aoi),
                                 "-o", str(out), *CLI_TINY], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        partial = None
        while proc.poll() is None and partial is None:
            partial = next((p.name for p in out_dir.glob(".out.partial-*")), None)
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        final = [p.name for p in out_dir.iterdir() if not p.name.startswith(".")]
        return partial is not None and not final, \
            f"killed while writing {partial or '(never saw the temporary file)'}; final names left: {final or 'none'}"

    # ------------------------------------------------------------------------------- the door

    def host_refused(self):
        codes = [self.svc.client.get(route, headers={"Host": "evil.example"}).status_code for route in ("/health", "/jobs")]
        ok = self.svc.client.get("/jobs", headers={"Host": f"localhost:{self.svc.port}"}).status_code
        return codes == [400, 400] and ok == 200, f"Host evil.example -> {codes}, localhost -> {ok}"

    def absurd_steps_refused(self):
        resp = self.post(self.body(options={"steps": 1_000_000_000}))
        if resp.status_code == 201:  # accepted: take it off the queue, or it holds the worker for weeks
            self.svc.client.delete(f"/jobs/{resp.json()['id']}")
        detail = resp.json().get("detail", "")
        bound = re.search(r"\d[\d_,]*", detail.split("steps", 1)[-1]) if "steps" in detail else None
        return resp.status_code == 422 and bound is not None, f"{resp.status_code}: {detail[:100]!r}"

    def truncated_scene_refused(self):
        broken = write_scene(self.tmp / "broken.tif", width=96, height=96, blocksize=32)
        os.truncate(broken, int(broken.stat().st_size * 0.6))
        resp = self.post(self.body(scene=str(broken)))
        return resp.status_code == 422 and "truncated" in resp.text, f"{resp.status_code}: {resp.json()['detail'][:90]!r}"

    def bad_bodies_4xx(self):
        codes = {
            "malformed": self.post(content=b'{"scene": ', headers={"Content-Type": "application/json"}).status_code,
            "wrong type": self.post(self.body(seed="x")).status_code,
            "unknown field": self.post(self.body(colour="red")).status_code,
            "missing file": self.post(self.body(scene=str(self.tmp / "nowhere.tif"))).status_code,
            "5 MB body": self.post(self.body(aoi={"type": "FeatureCollection", "features": [],
                                                  "pad": "x" * (5 << 20)})).status_code,
        }
        held = all(400 <= c < 500 for c in codes.values()) and codes["5 MB body"] == 413
        return held, ", ".join(f"{k} {v}" for k, v in codes.items())

    # ----------------------------------------------------------------------------- the workers

    def submit(self, name: str, options: dict) -> str:
        resp = self.post({"scene": str(self.scene), "aoi": str(self.aoi), "output": str(self.tmp / name),
                          "options": options})
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.svc.client.get(f"/jobs/{job_id}").json()

    def cancel_latency(self):
        job_id = self.submit("cancel.tif", HUGE)
        wait_for(lambda: self.job(job_id)["stage"] == "train", 120)
        t0 = time.monotonic()
        self.svc.client.delete(f"/jobs/{job_id}")
        job, _ = wait_for(lambda: (j := self.job(job_id))["state"] != "running" and j, 30, every=0.02)
        latency = time.monotonic() - t0
        leftovers = [p.name for p in self.tmp.glob("*cancel*")]
        kept = bool(list((self.svc.tmp / "cache").rglob("checkpoint.pt")))
        return job["state"] == "cancelled" and latency <= 2.0 and not leftovers and kept, \
            f"steps 200000: {job['state']} after {latency:.2f} s, outputs left: {leftovers or 'none'}, checkpoint kept: {kept}"

    def dead_worker(self):
        job_id = self.submit("dead.tif", HUGE)
        nxt = self.submit("next.tif", TINY)
        wait_for(lambda: self.job(job_id)["stage"] == "train", 120)
        before = health(self.svc)
        [pid] = before["worker_pids"]
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()

        def handled():
            j = self.job(job_id)
            return j if j["state"] == "queued" or j["attempts"] > 1 else None

        job, _ = wait_for(handled, 30)
        noticed = time.monotonic() - t0
        self.svc.client.delete(f"/jobs/{job_id}")
        done, _ = wait_for(lambda: (j := self.job(nxt))["state"] in ("done", "failed", "cancelled") and j, 300,
                           every=0.3)
        after = health(self.svc)
        replaced = after["workers_alive"] == 1 and pid not in after["worker_pids"]
        return noticed <= 5.0 and replaced and done["state"] == "done", \
            f"noticed in {noticed:.2f} s (attempt {job['attempts']} queued again), new worker: {replaced}, next job {done['state']}"

    def load(self):
        path = write_scene(self.tmp / "small.tif", width=48, height=48, blocksize=16)
        aoi = write_aoi(self.tmp / "small.geojson", [pixel_box(path, 16, 16, 28, 28)])
        options = {"steps": 5, "width": 8, "crop": 16, "batch": 1, "timesteps": 8, "threads": 1}
        ids, submit_codes, poll_codes = [], [], []
        lock, stop = threading.Lock(), threading.Event()

        def client(n: int) -> None:
            with httpx.Client(base_url=self.svc.url, headers=self.svc.client.headers, timeout=30) as c:
                for k in range(n * 13, min(50, n * 13 + 13)):
                    r = c.post("/jobs", json={"scene": str(path), "aoi": str(aoi), "seed": k, "options": options,
                                              "output": str(self.tmp / "load" / f"out-{k}.tif")})
                    with lock:
                        submit_codes.append(r.status_code)
                        if r.status_code == 201:
                            ids.append(r.json()["id"])

        def poller() -> None:
            with httpx.Client(base_url=self.svc.url, headers=self.svc.client.headers, timeout=30) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    code = c.get(f"/jobs/{ids[-1]}" if ids else "/jobs").status_code
                    with lock:
                        poll_codes.append(code)
                    time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

        t_start = time.monotonic()
        poll = threading.Thread(target=poller)
        poll.start()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            wait_for(lambda: all(self.job(i)["state"] in ("done", "failed", "cancelled") for i in ids[-3:]), 1200,
                     every=1.0)
        finally:
            stop.set()
            poll.join()
        jobs = [self.job(i) for i in ids]
        done = sum(j["state"] == "done" for j in jobs)
        by_created = sorted(jobs, key=lambda j: j["created"])
        in_order = [j["started"] for j in by_created] == sorted(j["started"] or 0 for j in jobs)
        failed_polls = sum(c != 200 for c in poll_codes)
        held = submit_codes.count(201) == 50 and done == 50 and in_order and failed_polls == 0
        return held, (f"{submit_codes.count(201)}/50 accepted, {done} done in order: {in_order}, "
                      f"{len(poll_codes)} polls at 10/s, {failed_polls} failed, {time.monotonic() - t_start:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-load", action="store_true", help="skip the 50-job load case (about a minute)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rs-geo-edit-faults-"))
    bench = Bench(tmp)
    print(f"fault bench in {tmp}", flush=True)
    bench.case("1 provenance sidecar kept (CLI)", bench.sidecar_kept)
    bench.case("2 cache spares the user's files (CLI)", bench.cache_spares_user_files)
    bench.case("  SIGKILL mid-run: no partial file (CLI)", bench.sigkill_cli_leaves_no_partial)
    (tmp / "service").mkdir()
    bench.svc = Service(tmp / "service").start()
    try:
        bench.case("3 foreign Host refused", bench.host_refused)
        bench.case("4 steps 1e9 refused at submit", bench.absurd_steps_refused)
        bench.case("5 truncated GeoTIFF refused at submit", bench.truncated_scene_refused)
        bench.case("  bad bodies get 4xx, never 5xx", bench.bad_bodies_4xx)
        bench.case("6 cancel lands within 2 s", bench.cancel_latency)
        bench.case("7 dead worker noticed and replaced", bench.dead_worker)
        if not args.skip_load:
            bench.case("  50 jobs, 4 clients, polling 10/s", bench.load)
    finally:
        bench.svc.stop()
    held = sum(r[1] for r in bench.results)
    print(f"{held}/{len(bench.results)} held")
    return 0 if held == len(bench.results) else 1


if __name__ == "__main__":
    sys.exit(main())
