"""The run's answer at a glance: the headline and verdicts printed last and leading the report, the
compact regression gate, and the HTML report (rendered in headless Chromium at 1280 px when it is
installed, Debian `chromium`)."""
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bench import headline as H
from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
SUITE = """systems = ["fake", "echo"]
tasks = ["spoken-qa", "fake-qa"]
conditions = ["clean", "white-snr10", "white-snr0"]
limit = 6
baselines = ["echo"]
"""


@pytest.fixture
def run_out(tmp_path, capsys, fakes_registered):
    (tmp_path / "suite.toml").write_text(SUITE)
    assert main(["run", "--suite", str(tmp_path / "suite.toml"), "--output-dir", str(tmp_path / "runs"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    return Path(out.strip().splitlines()[-1]), out


@pytest.fixture
def run_dir(run_out):
    return run_out[0]


def test_the_last_screen_holds_the_headline_and_verdicts(run_out):
    run_dir, out = run_out
    lines = out.rstrip("\n").splitlines()
    screen = lines[-40:]
    assert all(len(l) <= 120 for l in screen), [l for l in screen if len(l) > 120]
    start = next(i for i, l in enumerate(screen) if l.startswith("## Headline (clean;"))
    table = [l for l in screen[start + 1:] if l.startswith("|")]
    assert table[0].split("|")[1].strip() == "system" and "spoken-qa" in table[0] and "fake-qa" in table[0]
    assert [r.split("|")[1].strip() for r in table[2:]] == ["fake", "echo"]  # systems as rows, in run order
    cells = [c.strip() for c in table[2].split("|")[2:-1]]
    assert all(re.fullmatch(r"(\*\*)?-?[\d.e+-]+ ±[\d.e+-]+(\*\*)?", c) for c in cells), cells
    verdict = next(l for l in screen if l.startswith("fake vs echo:"))
    assert "better on fake-qa (+1 [1, 1])" in verdict  # fake-qa wants the reversed text: the fake wins
    assert "metrics (n 6 items each): spoken-qa " in out and "fake-qa accuracy" in out
    assert "### condition:" not in out  # the full tables are behind --full
    assert screen[-1] == str(run_dir) and "table.md" in screen[-3] and "3 output(s) failed" in screen[-2]
    assert (run_dir / "headline.md").read_text().startswith("## Headline (clean;")
    assert "### condition: white-snr0" in (run_dir / "table.md").read_text()


def test_full_prints_every_table_before_the_headline(run_dir, capsys):
    assert main(["report", str(run_dir), "--full"]) == 0
    out = capsys.readouterr().out
    assert out.index("### condition: clean") < out.index("### condition: white-snr0") < out.index("## Headline")


def _row(system, value, metric="accuracy", task="qa", hib=True, **kw):
    return {"system": system, "task": task, "condition": "clean", "metric": metric, "baseline": None,
            "higher_is_better": hib, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 24,
            "n_failed": 0, **kw}


def test_a_metric_constant_across_systems_does_not_lead():
    rows = [_row(s, 0.0, "exact_match", primary=True) for s in ("a", "b")] + \
           [_row("a", 0.4, "f1"), _row("b", 0.6, "f1"), _row("a", 0.1, "wer", "asr", False), _row("b", 0.1, "wer", "asr", False)]
    # exact_match is declared but says 0 for everyone; wer is constant too but the only metric of asr
    assert H.primary_metrics(rows) == {"qa": "f1", "asr": "wer"}
    rows = [_row(s, v, "exact_match", primary=True) for s, v in (("a", 0.1), ("b", 0.2))] + [_row("a", 0.4, "f1")]
    assert H.primary_metrics(rows) == {"qa": "exact_match"}  # declared and informative: it leads


def test_best_per_column_passes_over_the_topline_and_follows_the_direction():
    rows = [_row("text", 0.9), _row("x", 0.5), _row("y", 0.7),
            _row("text", 0.0, "wer", "asr", False), _row("x", 0.2, "wer", "asr", False), _row("y", 0.3, "wer", "asr", False)]
    h = H.build(rows, toplines=["text"])
    assert h.best == {("y", "qa"), ("x", "asr")}
    text = H.render(h)
    assert "| text (topline) | 0.9 ±0.1" in text and "**0.7 ±0.1**" in text and "**0.2 ±0.1**" in text


def test_verdicts_say_better_worse_unclear_and_where_the_verdict_changes():
    diff = lambda task, v, lo, hi, hib=True, **kw: {**_row("e2e", v, task=task, hib=hib, **kw), "baseline": "cascade",
                                                    "ci_low": lo, "ci_high": hi, "significant": lo > 0 or hi < 0}
    rows = [_row(s, 0.5, task=t, primary=True) for s in ("cascade", "e2e") for t in ("qa", "mt", "mtt")] + [
        diff("qa", 0.10, 0.04, 0.15), diff("mt", -0.2, -0.3, -0.1), diff("mtt", 0.02, -0.18, 0.22),
        {**diff("mtt", 0.2, 0.1, 0.3), "condition": "white-snr0"},  # n.s. clean, better in noise: listed
        {**diff("mtt", 0.3, 0.2, 0.4), "bucket": ">30", "bucket_by": "cascade"},
        {**diff("mt", 0.2, 0.1, 0.3), "condition": "white-snr0"},  # worse clean, better in noise: listed
        {**diff("qa", 0.3, 0.2, 0.4), "condition": "white-snr10"},  # better as on clean: nothing new
        {**diff("qa", 0.01, -0.2, 0.2), "condition": "white-snr5"}]  # n.s. elsewhere: not listed
    h = H.build(rows)
    assert [(v.system, v.baseline) for v in h.verdicts] == [("e2e", "cascade")]
    line = " ".join(H.render(h, width=400).splitlines())
    assert ("e2e vs cascade: better on qa (+0.1 [0.04, 0.15]); worse on mt (-0.2); n.s. on mtt; better at "
            "mtt @ white-snr0 (+0.2 [0.1, 0.3]), mtt @ cascade WER >30 (+0.3 [0.2, 0.4]), mt @ white-snr0 (+0.2 [0.1, 0.3])"
            ) in line
    assert "white-snr10" not in line and "white-snr5" not in line
    # a ±0.2 interval at n 24 resolves a 0.05 difference at about 24 * (0.2 / 0.05)^2 = 384 items
    assert H.items_needed({"n": 24, "ci_low": -0.18, "ci_high": 0.22}) == 384
    assert "needs about 380 items on mtt" in line


def test_compare_prints_what_moved_in_one_table(tmp_path, capsys):
    base = [_row("a", 0.6), _row("b", 0.6), _row("c", 0.6), _row("d", 0.6, metric="f1")]
    new = [_row("a", 0.3), _row("b", 0.65), _row("c", 0.6 + 2e-7)]  # c: float noise, not a move
    for name, rows in (("base", base), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "new")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| REGRESSED | a | qa | clean | accuracy | 0.6 [0.5, 0.7] | 0.3 | -0.3 | yes |"
    assert out[3].startswith("| MISSING | d | qa | clean | f1 |")
    assert out[4] == "| improved | b | qa | clean | accuracy | 0.6 [0.5, 0.7] | 0.65 | +0.05 | no |"
    assert not any("| c |" in l for l in out)  # unchanged: not listed
    assert out[-2:] == ["1 REGRESSED, 1 MISSING, 1 improved", "2 regression(s): a/qa/clean/accuracy, d/qa/clean/f1"]


def test_report_files(run_dir):
    html = (run_dir / "report.html").read_text()
    for part in ("<h2>Headline (clean)</h2>", "<b>fake</b> vs <b>echo</b>", "<details open><summary><b>clean</b>",
                 "<summary><b>white-snr0</b>", "<audio controls", "qa-000", "failed: RuntimeError",
                 "plot-robustness-spoken-qa-white-snr.png"):
        assert part in html, part
    order = [html.index(p) for p in ("<h2>Headline", "<h2>Verdicts", "plot-robustness-spoken-qa", "Where the systems disagree",
                                     "<h2>Every metric")]
    assert order == sorted(order)  # the question first, the tables last
    assert (run_dir / "plot-robustness-spoken-qa-white-snr.png").stat().st_size > 1000
    assert (run_dir / "plot-latency-spoken-qa.png").exists()
    assert len(list((run_dir / "audio").glob("*.wav"))) == 6  # spoken-qa examples; fake-qa has no audio


def test_examples_are_the_items_the_systems_disagree_on_most():
    from types import SimpleNamespace

    from bench.html import disagreements
    from bench.types import Generation, Item, Metric, Task, Turn

    class T(Task):
        metrics = (Metric("accuracy", "item", True, lambda it, g, c: float(g.text == it.references[0])),)

    items = [Item(id=f"i{k}", turn=Turn("user", text="q"), references=("a",)) for k in range(4)]
    answers = {"x": ["a", "a", "b", "a"], "y": ["a", "b", "b", None]}
    by_system = {s: {it.id: (SimpleNamespace(generation=Generation(text=a), error=None) if a else None) for it, a in zip(items, ans)}
                 for s, ans in answers.items()}
    # i1: right and wrong; i3: right and failed (a failure spreads one unit below the worst answer);
    # i0 and i2: every system alike
    assert [it.id for it in disagreements(T(), items, by_system, "accuracy", k=2)] == ["i1", "i3"]


def _png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_at_1280_px_with_nothing_cut_off(run_dir, tmp_path):
    out = tmp_path / "shot.png"
    proc = subprocess.run([str(ROOT / "scripts" / "screenshot_report.sh"), str(run_dir), str(out), "1280"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20000 and _png_width(out) == 1280
    # the page itself never scrolls sideways: wide tables scroll inside their own boxes
    probe = run_dir / "probe.html"
    probe.write_text((run_dir / "report.html").read_text().replace(
        "</body>", "<script>document.title='W'+document.documentElement.scrollWidth</script></body>"))
    dom = subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert int(re.search(r"<title>W(\d+)</title>", dom).group(1)) <= 1280


def test_every_task_declares_a_primary_metric_it_has():
    from bench.plugins import build_task, tasks
    from tasks import needs_argument

    for name in tasks().names():
        if needs_argument(name):
            continue
        t = build_task(name)
        assert t.primary_metric() in [m.name for m in t.metrics if not m.timing], name


def test_an_unseen_voice_family_has_its_own_headline_column_and_verdict():
    diff = lambda v, lo, hi, **kw: {**_row("e2e", v, **kw), "baseline": "cascade", "ci_low": lo, "ci_high": hi,
                                    "significant": lo > 0 or hi < 0}
    rows = [_row(s, v, primary=True) for s, v in (("cascade", 0.5), ("e2e", 0.6))] + [
        _row(s, v, primary=True, condition="voice-joe") for s, v in (("cascade", 0.1), ("e2e", 0.3))] + [
        _row(s, 0.2, primary=True, condition="white-snr0") for s in ("cascade", "e2e")] + [
        diff(0.1, -0.05, 0.25), diff(0.2, 0.1, 0.3, condition="voice-joe")]
    h = H.build(rows)
    assert [c[0] for c in h.columns] == ["qa", "qa @ voice-joe"]  # noise stays in the tables, the voice is shown
    assert h.best == {("e2e", "qa"), ("e2e", "qa @ voice-joe")}
    line = " ".join(H.render(h, width=400).splitlines())
    assert "e2e vs cascade: better on qa @ voice-joe (+0.2 [0.1, 0.3]); n.s. on qa" in line
