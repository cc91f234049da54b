"""Cohorts on Dask distributed: a real 2-worker LocalCluster maps generated slides (one of them
corrupt) and must agree with the single-process run; a worker killed mid-run, and the whole
command killed with SIGKILL, must still end in complete outputs equal to an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan.cli import app
from slide_helpers import paint_slide, texture, write_pyramid  # noqa: F401

GOOD = ("a_plain", "b_pyramid", "c_plain")
BROKEN = "d_broken"


def plain_slide(path: Path, seed: int, width: int = 300, height: int = 200) -> Path:
    """A PNG at the training scale, recorded in the file (6350 dpi = 4 µm/px): tissue on the
    left two thirds, an IDC block, glass."""
    rng = np.random.default_rng(seed)
    img = texture(rng, height, width, "glass")
    tissue = width * 2 // 3
    img[:, :tissue] = texture(rng, height, tissue, "normal")
    img[: height // 2, : tissue // 2] = texture(rng, height // 2, tissue // 2, "idc")
    Image.fromarray(img).save(path, dpi=(6350, 6350))
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cohort-in")
    plain_slide(folder / f"{GOOD[0]}.png", seed=3)
    write_pyramid(folder / f"{GOOD[1]}.tif", paint_slide(seed=4))
    plain_slide(folder / f"{GOOD[2]}.png", seed=5, width=400, height=150)
    (folder / f"{BROKEN}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder


@pytest.fixture(scope="module")
def single(trained_bundle: Path, slides: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same slides mapped by one process (no Dask)."""
    from idcscan.runtime.predictor import Predictor
    from idcscan.maps.mapper import SlideOptions
    from idcscan.maps.run import run_slides

    out = tmp_path_factory.mktemp("cohort-single")
    report = run_slides(Predictor(trained_bundle), [slides], out, SlideOptions(), progress=False)
    assert sorted(s.slide for s in report.done) == list(GOOD)
    assert [p.stem for p, _ in report.failed] == [BROKEN]
    return out


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: 2 worker processes (each behind a nanny that restarts it)."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
    ) as cluster, Client(cluster) as c:  # fmt: skip
        yield c


def read_tiles(path: Path) -> tuple[list[tuple[int, int]], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [(int(r["x"]), int(r["y"])) for r in rows], np.array(
        [float(r["probability"]) for r in rows]
    )


def assert_same_slides(out: Path, reference: Path, names=GOOD) -> None:
    """Same tiles (probabilities within 1e-6) and the same summary, timings aside."""
    for name in names:
        xy, probs = read_tiles(out / name / "tiles.csv")
        ref_xy, ref_probs = read_tiles(reference / name / "tiles.csv")
        assert xy == ref_xy and len(probs) > 0, name
        np.testing.assert_allclose(probs, ref_probs, atol=1e-6, rtol=0)
        got = json.loads((out / name / "summary.json").read_text())
        want = json.loads((reference / name / "summary.json").read_text())
        for summary in (got, want):
            summary.pop("timings")
            summary.pop("path")  # resolved on the cluster, as given on the command line
        assert got == want, name
        assert {p.name for p in (out / name).iterdir()} == {
            p.name for p in (reference / name).iterdir()
        }


def summary_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return {r["slide"]: r for r in csv.DictReader(fh)}


def test_cluster_maps_like_one_process_and_reports_the_corrupt_slide(
    trained_bundle: Path, slides: Path, single: Path, client, tmp_path: Path
) -> None:
    from idcscan.cohorts.run import run_cohort

    events: list[tuple[str, int, int, int]] = []
    report = run_cohort(
        trained_bundle, [slides], tmp_path, client=client, progress=False,
        on_progress=lambda *e: events.append(e),
    )  # fmt: skip
    assert sorted(s.slide for s in report.done) == list(GOOD)
    assert [p.stem for p, _ in report.failed] == [BROKEN]
    assert f"{BROKEN}.png" in report.failed[0][1]
    assert_same_slides(tmp_path, single)
    # both worker processes took slides, each reporting its tiles as it went
    assert {e[3] for e in events} == {p for p in client.run(os.getpid).values()}
    assert {e[0] for e in events} == set(GOOD)

    rows = summary_rows(tmp_path)
    assert sorted(rows) == sorted([*GOOD, BROKEN])
    assert rows[BROKEN]["status"] == "failed" and f"{BROKEN}.png" in rows[BROKEN]["error"]
    for name in GOOD:
        assert rows[name]["status"] == "ok" and rows[name]["error"] == ""
    assert not (tmp_path / BROKEN).exists()  # a failure is never a slide folder
    page = report.report_html.read_text()
    for name in [*GOOD, BROKEN]:
        assert f'data-slide="{name}"' in page
    # the single-process run records the same failure the same way
    assert summary_rows(single)[BROKEN]["status"] == "failed"


def test_a_killed_worker_is_replaced_and_the_cohort_completes(
    trained_bundle: Path, slides: Path, single: Path, client, tmp_path: Path
) -> None:
    from idcscan.cohorts.run import run_cohort

    killed: list[tuple[str, int]] = []

    def kill_first_worker(slide: str, done: int, total: int, pid: int) -> None:
        if not killed and slide == GOOD[1]:  # the pyramid: most tiles, killed as it starts
            os.kill(pid, signal.SIGKILL)
            killed.append((slide, pid))

    report = run_cohort(
        trained_bundle, [slides], tmp_path, client=client, progress=False, report=False,
        on_progress=kill_first_worker,
    )  # fmt: skip
    assert killed, "no worker reported progress on the pyramid slide"
    pid = killed[0][1]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert pid not in client.run(os.getpid).values()  # the nanny started a new process
    assert sorted(s.slide for s in report.done) == list(GOOD)
    assert [p.stem for p, _ in report.failed] == [BROKEN]
    assert_same_slides(tmp_path, single)
    assert not list(tmp_path.glob(".*partial*"))


def test_rerun_on_an_existing_cluster_skips_finished_slides(
    trained_bundle: Path, slides: Path, single: Path, client, tmp_path: Path
) -> None:
    """Joins the cluster through a scheduler file, as `--cluster FILE` does; shard 1/3 of the
    sorted slides first (the 1st and 4th), then all of them."""
    from idcscan.cohorts.run import run_cohort

    scheduler_file = tmp_path / "scheduler.json"
    # what `dask scheduler --scheduler-file` writes, reduced to the field clients read;
    # Client.write_scheduler_file dumps the whole scheduler_info, which can hold tuple keys
    # (TypeError in json) once the module's earlier tests have run tasks on this cluster
    scheduler_file.write_text(json.dumps({"address": client.scheduler.address}))
    out = tmp_path / "out"
    first = run_cohort(
        trained_bundle, [slides], out, cluster=str(scheduler_file), shard="1/3", progress=False
    )
    assert [s.slide for s in first.done] == [GOOD[0]]
    assert [p.stem for p, _ in first.failed] == [BROKEN]
    before = (out / GOOD[0] / "summary.json").stat().st_mtime_ns
    second = run_cohort(
        trained_bundle, [slides], out, cluster=str(scheduler_file), progress=False
    )
    assert [p.stem for p in second.skipped] == [GOOD[0]]
    assert sorted(s.slide for s in second.done) == list(GOOD[1:])
    assert (out / GOOD[0] / "summary.json").stat().st_mtime_ns == before
    assert_same_slides(out, single)


def test_cluster_option_errors_are_one_line(trained_bundle: Path, slides: Path, tmp_path: Path):
    from idcscan.errors import IdcscanError
    from idcscan.cohorts.run import default_workers, parse_cluster

    assert parse_cluster("local:3").workers == 3
    assert parse_cluster("local").workers == default_workers() >= 1
    assert parse_cluster("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    for bad in ("local:0", "local:x", "nowhere.json"):
        with pytest.raises(IdcscanError):
            parse_cluster(bad)
    args = ["slide", str(trained_bundle), str(slides), "--out", str(tmp_path), "--cluster"]
    result = CliRunner().invoke(app, [*args, "local:zero"])
    assert result.exit_code == 2 and "local:N" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------ SIGKILL mid-cohort, then re-run


N_KILLED = 6  # slides in the run that is killed once the first is finished


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from idcscan.cli import main; main()", *args]


def test_sigkill_mid_cohort_then_rerun_equals_an_uninterrupted_run(
    trained_bundle: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(N_KILLED):
        plain_slide(inputs / f"s{i}.png", seed=20 + i)
    reference, out = tmp_path / "reference", tmp_path / "out"
    runner = CliRunner()
    whole = runner.invoke(app, ["slide", str(trained_bundle), str(inputs), "--out", str(reference)])
    assert whole.exit_code == 0, whole.output

    cmd = _cli("slide", str(trained_bundle), str(inputs), "--out", str(out), "--cluster", "local:1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600  # a guard against a hang, not a timing assertion
    try:
        while not list(out.glob("*/summary.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no slide finished"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command, its scheduler and its workers
        proc.wait()
    finished = {p.parent.name for p in out.glob("*/summary.json")}
    assert 1 <= len(finished) < N_KILLED, finished

    again = runner.invoke(
        app, ["slide", str(trained_bundle), str(inputs), "--out", str(out), "--cluster", "local:1"]
    )
    assert again.exit_code == 0, again.output
    assert f"Skipped {len(finished)}" in again.output
    names = [f"s{i}" for i in range(N_KILLED)]
    assert_same_slides(out, reference, names)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and "partial" in p.name]
    rows, ref_rows = summary_rows(out), summary_rows(reference)
    assert sorted(rows) == names
    for name in names:
        for row in (rows[name], ref_rows[name]):
            row.pop("time_total_s"), row.pop("path")
        assert rows[name] == ref_rows[name]
    assert (out / "report.html").is_file()


# ------------------------------------------------------------------------------ the report


def test_report_command_with_patients(
    trained_bundle: Path, single: Path, tmp_path: Path
) -> None:
    patients = tmp_path / "patients.csv"
    patients.write_text(
        f"slide,patient\n{GOOD[0]},P1\n{GOOD[1]},P1\n{GOOD[2]},P2\n{BROKEN},P2\nlost,P3\n"
    )
    args = ["report", str(single), "--patients", str(patients), "--bundle", str(trained_bundle)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = (single / "report.html").read_text()
    assert 'id="patients"' in page and "lost" in page  # listed as missing from the folder
    s0, s1 = (json.loads((single / n / "summary.json").read_text()) for n in GOOD[:2])
    p1 = (s0["n_idc_tiles"] + s1["n_idc_tiles"]) / (s0["n_tiles"] + s1["n_tiles"])
    assert f'data-sort="{p1}"' in page
    assert "two synthetic textures" in page  # the model card, in words, not raw JSON:
    assert "IDC Positive when P(IDC) ≥ 50.00%" in page and "Slide maps" in page
    assert '{"method"' not in page.split("<details>")[0]

    patients.write_text("file,who\nx,y\n")
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "slide and patient" in " ".join(bad.output.split())
    empty = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert empty.exit_code == 2 and "no mapped slides" in " ".join(empty.output.split())


@pytest.mark.browser
def test_report_opens_offline_in_chromium(
    trained_bundle: Path, single: Path, browser, artifacts_dir: Path, tmp_path: Path
) -> None:
    from idcscan import DISCLAIMER
    from idcscan.cohorts.report import write_report

    patients = tmp_path / "patients.csv"
    patients.write_text(f"slide,patient\n{GOOD[0]},P1\n{GOOD[1]},P1\n{GOOD[2]},P2\n")
    path = write_report(single, patients=patients, bundle=trained_bundle)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    rows = page.locator("#slides tbody tr")
    assert rows.count() == 4
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.slide)")) == sorted(
        [*GOOD, BROKEN]
    )
    widths = page.locator("#slides img").evaluate_all("is => is.map(i => i.naturalWidth)")
    assert len(widths) == 3 and min(widths) > 0
    assert page.locator("img[alt^='Histogram']").evaluate("i => i.naturalWidth") > 0
    assert page.locator("#patients tbody tr").count() == 2
    assert DISCLAIMER in page.content()
    # sort by IDC fraction, descending on the second click
    header = page.locator("#slides th", has_text="IDC fraction")
    header.click()
    header.click()
    order = rows.evaluate_all("rs => rs.map(r => parseFloat(r.cells[4].dataset.sort))")
    assert order == sorted(order, reverse=True)
    page.screenshot(path=str(artifacts_dir / "cohort_report.png"), full_page=True)
    assert all(u.startswith(("file:", "data:")) for u in requests)
    page.close()


def test_report_shows_qc_fields_when_summaries_have_them(single: Path, tmp_path: Path) -> None:
    """Artefact QC (another part of slide mode) adds qc_* keys to summary.json: shown as is."""
    import shutil

    from idcscan.cohorts.report import write_report

    copy = tmp_path / "copy"
    shutil.copytree(single, copy)
    path = copy / GOOD[0] / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(qc_excluded_mm2=0.125, qc_regions={"pen": 2, "blur": 1})
    path.write_text(json.dumps(summary))
    page = write_report(copy).read_text()
    assert "qc_excluded_mm2: 0.125" in page and "qc_regions: pen 2, blur 1" in page
