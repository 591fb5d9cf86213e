"""The run report: HTML with tables, differences, plots and per-item examples; rendered in
headless Chromium when it is installed (Debian `chromium`)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_dir(tmp_path, capsys, fakes_registered):
    assert main(["run", "--systems", "fake,echo", "--tasks", "spoken-qa,fake-qa", "--limit", "6",
                 "--conditions", "clean,white-snr10,white-snr0", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


def test_report_files(run_dir):
    html = (run_dir / "report.html").read_text()
    for part in ("<h2>clean</h2>", "<h2>white-snr0</h2>", "Examples (clean)", "<audio controls", "qa-000",
                 "failed: RuntimeError", "plot-robustness-spoken-qa-white-snr.png"):
        assert part in html, part
    assert (run_dir / "plot-robustness-spoken-qa-white-snr.png").stat().st_size > 1000
    assert (run_dir / "plot-latency-spoken-qa.png").exists()
    assert len(list((run_dir / "audio").glob("*.wav"))) == 6  # spoken-qa examples; fake-qa has no audio


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    out = tmp_path / "shot.png"
    proc = subprocess.run([str(ROOT / "scripts" / "screenshot_report.sh"), str(run_dir), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20000
