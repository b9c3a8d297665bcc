"""Progress in logs: with stderr not a terminal, occasional plain lines instead of a bar."""

from landscape import progress


def test_log_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line after every item but the last
    with progress.progress_bar(range(4), label="run x") as items:
        assert list(items) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["run x: 1/4", "run x: 2/4", "run x: 3/4"]
    assert lines[1].startswith("run x: 2/4 (50%), 0m00s elapsed, ETA 0m00s")


def test_quiet_and_slow_intervals_print_nothing(monkeypatch, capsys):
    with progress.progress_bar(range(3), label="run x", enabled=False) as items:
        assert list(items) == [0, 1, 2]
    with progress.progress_bar(iter(range(3)), label="run x") as items:  # within LOG_EVERY
        assert list(items) == [0, 1, 2]
    assert capsys.readouterr().err == ""
