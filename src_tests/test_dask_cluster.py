"""Per-case work on a real Dask cluster (distributed.LocalCluster, 2 worker processes), and
local pool workers that end with their parent.

The cohort is the synthetic sample (24³ volumes) plus one case with an empty mask, so that
a failing case travels through the cluster too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from napari_ssl_radiomics.config import ClusterConfig, PrepareConfig, RadiomicsConfig, SampleConfig
from napari_ssl_radiomics.core.cache import read_crop
from napari_ssl_radiomics.core.events import drive
from napari_ssl_radiomics.core.parallel import ClusterError, run_cases
from napari_ssl_radiomics.core.preprocess import prepare
from napari_ssl_radiomics.core.radiomics import extract
from napari_ssl_radiomics.core.sample import write_sample_cohort

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    path = write_sample_cohort(root, SampleConfig(cases=6, size=24, seed=3))
    table = pd.read_csv(path, dtype=str)
    empty = sitk.Image([24, 24, 24], sitk.sitkUInt8)
    sitk.WriteImage(empty, str(root / "empty_mask.nii.gz"))
    broken = table.iloc[0].copy()
    broken["ID"], broken["Mask"] = "empty", "empty_mask.nii.gz"
    pd.concat([table, broken.to_frame().T]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
    ) as local:
        yield local


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_prepare_on_the_cluster_matches_local_and_rerun_reads_the_cache(manifest, cluster, tmp_path):
    cfg = PrepareConfig(size=28, spacing=1.0, jobs=1)
    local = drive(prepare(manifest, cfg, tmp_path / "local"))
    events = []
    remote = drive(
        prepare(manifest, cfg, tmp_path / "dask", ClusterConfig(scheduler=cluster.scheduler_address)), events.append
    )
    pd.testing.assert_frame_equal(local, remote)
    assert (remote["status"] == "skipped").sum() == 1 and "empty" in set(
        remote.loc[remote["status"] == "skipped", "ID"]
    )
    assert sorted(e.index for e in events) == list(range(1, len(local) + 1))
    for case_id in local.loc[local["status"] == "ok", "ID"]:
        a_img, a_mask, _ = read_crop(tmp_path / "local", case_id)
        b_img, b_mask, _ = read_crop(tmp_path / "dask", case_id)
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_mask, b_mask)
    again = []
    drive(prepare(manifest, cfg, tmp_path / "dask", ClusterConfig(scheduler=cluster.scheduler_address)), again.append)
    ok_ids = set(local.loc[local["status"] == "ok", "ID"])
    assert {e.case_id for e in again if e.status == "cached"} == ok_ids


def test_radiomics_on_the_cluster_survives_a_killed_worker(manifest, cluster, tmp_path):
    cfg = RadiomicsConfig(jobs=1)
    local, local_failures = drive(extract(manifest, cfg))
    on_cluster = ClusterConfig(scheduler=cluster.scheduler_address)
    with distributed.Client(cluster.scheduler_address) as client:
        before = _worker_pids(client)
        victim = next(iter(before.values()))
        killed = []

        def kill_once(event) -> None:  # after the first finished case, while others still run
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(event.case_id)

        remote, failures = drive(extract(manifest, cfg, tmp_path / "cache", on_cluster), kill_once)
        assert killed and victim not in _worker_pids(client).values()
    pd.testing.assert_frame_equal(local, remote)
    pd.testing.assert_frame_equal(local_failures, failures)
    assert list(failures["ID"]) == ["empty"]
    again = []
    cached, _ = drive(extract(manifest, cfg, tmp_path / "cache", on_cluster), again.append)
    assert {e.status for e in again if e.case_id != "empty"} == {"cached"}
    pd.testing.assert_frame_equal(local, cached)


def test_an_unreachable_scheduler_is_a_clear_error(manifest, tmp_path):
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        drive(extract(manifest, RadiomicsConfig(), None, ClusterConfig(scheduler="tcp://127.0.0.1:9", timeout=2)))


def test_a_worker_that_cannot_see_the_files_is_named(cluster, tmp_path):
    # The workers share this filesystem, so a folder nobody may enter stands in for a mount
    # that the workers lack.
    hidden = tmp_path / "private"
    hidden.mkdir()
    (hidden / "a.nii.gz").write_bytes(b"x")
    os.chmod(hidden, 0)
    try:
        if os.access(hidden / "a.nii.gz", os.F_OK):  # root ignores permissions: nothing to show
            pytest.skip("permissions are not enforced for this user")
        gen = run_cases(len, [("x",)], scheduler=cluster.scheduler_address, shared_paths=[hidden / "a.nii.gz"])
        with pytest.raises(ClusterError, match=r"Dask worker tcp://.* cannot read .*a\.nii\.gz"):
            list(gen)
    finally:
        os.chmod(hidden, 0o700)


def test_local_pool_workers_end_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from napari_ssl_radiomics.core.parallel import run_cases
            if __name__ == "__main__":  # the pool spawns its workers
                print("ready", flush=True)
                for outcome in run_cases(time.sleep, [(60,), (60,), (60,)], jobs=2):
                    pass
            """
        ),
        encoding="utf-8",
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        proc = psutil.Process(parent.pid)
        deadline = time.monotonic() + 60
        while (
            len(
                workers := [p for p in proc.children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]
            )
            < 2
        ):
            assert time.monotonic() < deadline, "the pool never started its workers"
            time.sleep(0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"
    finally:
        if parent.poll() is None:
            parent.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dask_process(*args: str) -> subprocess.Popen:
    code = "import sys; from distributed.cli.dask_{0} import main; sys.argv[0] = 'dask-{0}'; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code.format(args[0]), *args[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_ssl_radiomics", *args],
        capture_output=True,
        encoding="utf-8",  # the progress bar's blocks, whatever this machine's locale
        timeout=timeout,
    )


def test_prepare_ends_after_timeout_when_its_last_worker_dies_and_a_rerun_finishes(tmp_path):
    manifest = write_sample_cohort(tmp_path / "cohort", SampleConfig(cases=30, size=64, seed=4))
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _dask_process("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1])
    workers = []
    try:
        workers.append(_dask_process("worker", address, "--no-nanny", "--nthreads", "1"))
        out = tmp_path / "cache"
        args = ["prepare", str(manifest), "--out", str(out), "--size", "28", "--scheduler", address, "--timeout", "4"]
        run = subprocess.Popen(
            [sys.executable, "-m", "napari_ssl_radiomics", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while not list((out / "crops").glob("*.json")):  # a case is whole (its .json comes last): kill -9
            assert time.monotonic() < deadline and run.poll() is None, "the worker never prepared a case"
            time.sleep(0.02)
        workers[0].kill()
        _, err = run.communicate(timeout=120)  # a hang fails here
        last = err.decode().strip().splitlines()[-1]
        assert run.returncode == 2, err.decode()
        assert "has had no worker for 4 s" in last and "run the same command again" in last
        assert "Traceback" not in err.decode()
        # the whole cases (a case killed between its .npz and its .json is prepared again)
        kept = {p.name: p.stat().st_mtime_ns for p in (out / "crops").glob("*.npz") if p.with_suffix(".json").exists()}
        assert 0 < len(kept) < 30
        workers.append(_dask_process("worker", address, "--no-nanny", "--nthreads", "1"))
        again = _cli(*args[:-1], "30")
        assert again.returncode == 0, again.stderr
        table = pd.read_csv(out / "cases.csv")
        assert (table["status"] == "ok").sum() == 30
        assert {name: (out / "crops" / name).stat().st_mtime_ns for name in kept} == kept  # not prepared again
    finally:
        for proc in [*workers, scheduler]:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("address", ["not a url!!", "http://127.0.0.1:8786"])
def test_a_malformed_scheduler_is_refused_before_any_client(address):
    with pytest.raises(ClusterError, match=r"give PROTOCOL://HOST:PORT, e\.g\. tcp://127\.0\.0\.1:8786"):
        list(run_cases(len, [("x",)], scheduler=address))


def test_a_scheduler_that_dies_ends_prepare_with_one_line_not_every_case_skipped(tmp_path):
    manifest = write_sample_cohort(tmp_path / "cohort", SampleConfig(cases=30, size=64, seed=5))
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _dask_process("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1])
    worker = _dask_process("worker", address, "--no-nanny", "--nthreads", "1")
    out = tmp_path / "cache"
    try:
        args = ["prepare", str(manifest), "--out", str(out), "--size", "28", "--scheduler", address, "--timeout", "4"]
        run = subprocess.Popen(
            [sys.executable, "-m", "napari_ssl_radiomics", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while not list((out / "crops").glob("*.npz")):
            assert time.monotonic() < deadline and run.poll() is None, "the worker never prepared a case"
            time.sleep(0.02)
        scheduler.kill()
        _, err = run.communicate(timeout=120)
        text = err.decode()
        assert run.returncode == 2, text[-3000:]
        assert f"the Dask cluster at {address} lost its scheduler" in text.strip().splitlines()[-1]
        assert "Traceback" not in text and "skipped" not in text
    finally:
        for proc in (worker, scheduler):
            proc.kill()
            proc.wait()
