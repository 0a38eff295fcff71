"""Progress: a tqdm bar only on a terminal; in a log file plain lines, no carriage returns."""
import io
import sys

from zoomin.progress import Lines, bar


def test_off_a_terminal_progress_is_plain_lines(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a redirected log: not a terminal
    b = bar(range(7), desc="slides", every=3)
    assert isinstance(b, Lines)
    assert list(b) == list(range(7))
    log = sys.stderr.getvalue()
    assert "\r" not in log and log.splitlines() == ["slides: 3/7", "slides: 6/7", "slides: 7/7"]


def test_quiet_is_silent_and_an_epoch_bar_off_a_terminal_says_nothing(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with bar(total=4, desc="slides", enabled=False, every=1) as b:
        for _ in range(4):
            b.update()
    for _ in bar(range(5), desc="epoch 1/2"):  # training: the trainer's epoch line is the progress
        pass
    assert sys.stderr.getvalue() == ""


def test_on_a_terminal_it_is_tqdm(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    from tqdm.auto import tqdm
    b = bar(range(3), desc="x")
    assert isinstance(b, tqdm)
    b.close()
