"""`run`'s exit status: 1 when every item of a system × task failed (an endpoint that is down, a
system that cannot answer), or more than `--max-failed-fraction` of them; the reason on stderr, the
run directory still the last line of stdout."""
import socket
from pathlib import Path

from bench.cli import main


def _run(tmp_path, systems, *extra):
    return main(["run", "--systems", systems, "--tasks", "fake-qa", "--output-dir", str(tmp_path / "runs"),
                 "--no-progress", "--baselines", "", *extra])


def test_a_run_where_every_item_failed_exits_1(tmp_path, capsys, fakes_registered):
    assert _run(tmp_path, "broken,echo") == 1
    out, err = capsys.readouterr()
    assert "run failed (every item failed): broken × fake-qa (12/12 failed)" in err and "echo" not in err.split("run failed")[1]
    assert Path(out.strip().splitlines()[-1]).is_dir()  # the run was written all the same


def test_max_failed_fraction(tmp_path, capsys, fakes_registered):
    assert _run(tmp_path, "fake") == 0  # 1 of 12 failed ('FAIL-me'): fine by default
    assert _run(tmp_path, "fake", "--max-failed-fraction", "0.1") == 0  # 1/12 = 0.083
    capsys.readouterr()
    assert _run(tmp_path, "fake", "--max-failed-fraction", "0") == 1
    assert "run failed (over 0 failed): fake × fake-qa (1/12 failed)" in capsys.readouterr().err


def test_a_run_against_an_endpoint_that_is_down_exits_1(tmp_path, capsys, fakes_registered):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    code = main(["run", "--systems", "openai", "--tasks", "fake-qa", "--limit", "3", "--output-dir",
                 str(tmp_path / "runs"), "--no-progress", "--baselines", "", "--system-args",
                 f"openai:model=m,base_url=http://127.0.0.1:{port}/v1,retries=0"])
    assert code == 1 and "openai × fake-qa (3/3 failed)" in capsys.readouterr().err
