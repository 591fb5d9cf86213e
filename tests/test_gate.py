"""The regression gate and the chat command."""
import io
import json

from bench.cli import main
from bench.compare import compare


def _row(value, lo, hi, hib=True, metric="accuracy", **kw):
    return {"system": "text", "task": "spoken-qa", "condition": "clean", "metric": metric, "baseline": None,
            "value": value, "ci_low": lo, "ci_high": hi, "n": 100, "higher_is_better": hib, "task_version": "2", **kw}


def test_gate_fails_only_beyond_the_interval_and_tolerance():
    base = [_row(0.60, 0.50, 0.70), _row(0.20, 0.15, 0.25, hib=False, metric="wer")]
    assert compare(base, [_row(0.55, 0.45, 0.65), _row(0.24, 0.2, 0.3, hib=False, metric="wer")])[0] == []
    bad, _ = compare(base, [_row(0.40, 0.30, 0.50), _row(0.20, 0.15, 0.25, hib=False, metric="wer")])
    assert len(bad) == 1 and "REGRESSED text/spoken-qa/clean/accuracy" in bad[0]
    bad, _ = compare(base, [_row(0.60, 0.5, 0.7), _row(0.30, 0.25, 0.35, hib=False, metric="wer")])
    assert len(bad) == 1 and "wer" in bad[0]
    assert compare(base, [_row(0.45, 0.35, 0.55), _row(0.2, 0.15, 0.25, hib=False, metric="wer")], tolerance=0.2)[0] == []
    bad, _ = compare(base, [_row(0.60, 0.5, 0.7)])
    assert bad == ["MISSING   text/spoken-qa/clean/wer: in the baseline, not in the new run"]
    assert compare(base, [_row(0.9, 0.8, 1.0), base[1]])[0] == []  # improvements pass


def test_gate_cli_exit_codes(tmp_path, capsys):
    for name, rows in (("base", [_row(0.6, 0.5, 0.7)]), ("same", [_row(0.6, 0.5, 0.7)]), ("worse", [_row(0.3, 0.2, 0.4)])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "same")]) == 0
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse")]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "nope")]) == 2


def test_chat_keeps_history_and_handles_bad_turns(monkeypatch, capsys, fakes_registered):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nsay: how are you\n/nonexistent/file.wav\n/reset\nbye\n"))
    assert main(["chat", "--system", "fake"]) == 0
    out = capsys.readouterr().out
    assert "fake> olleh" in out                       # typed turn (the fake answers reversed)
    assert "heard: (audio)" in out and "fake> uoy era woh" in out  # spoken via TTS; its gold text
    assert "cannot use that turn" in out and "no such file" in out
    assert "(conversation cleared)" in out and "fake> eyb" in out


def test_perf_systems_table(tmp_path, capsys, fakes_registered):
    out = tmp_path / "perf.md"
    assert main(["perf", "--systems", "fake,echo", "--task", "spoken-qa", "--limit", "4", "--batch-sizes", "1,2",
                 "--output", str(out)]) == 0
    table = out.read_text()
    assert table.count("| fake |") == 2 and table.count("| echo |") == 2 and "overhead" in table
    rows = [ln.split("|")[1:-1] for ln in table.splitlines() if ln.startswith("| fake |")]
    assert rows[0][3].strip() == "1.00"  # batch 1 is the one-at-a-time loop itself
    rate = lambda r: float(r[2])
    # the ratio of the items/s columns (printed to 3 significant digits, the ratio to 2 decimals)
    assert abs(float(rows[1][3]) - rate(rows[1]) / rate(rows[0])) <= 0.005 + 0.01 * rate(rows[1]) / rate(rows[0])


def test_chat_takes_the_same_system_options_as_run(monkeypatch, fakes_registered):
    """`chat --system-args 'fake:...'` and the alias flags reach that system's factory, as in `run`;
    another system's options do not."""
    import bench.plugins

    seen = {}
    real = bench.plugins.build_system
    monkeypatch.setattr(bench.plugins, "build_system", lambda name, ctx, args: seen.update(args) or real(name, ctx, args))
    monkeypatch.setattr("sys.stdin", io.StringIO("/quit\n"))
    assert main(["chat", "--system", "fake", "--system-args", "fake:reverse=no", "--e2e", "some/ckpt"]) == 0
    assert seen == {"reverse": "no"}
