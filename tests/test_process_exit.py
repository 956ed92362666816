"""`pipeline.process_exit`: the exit status, atexit handlers and buffered output survive the fast exit; the
interpreter's teardown is skipped; a running non-daemon thread is still waited for."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipeline.process_exit import exit_status

SCRIPT = """
import atexit, sys, threading, time
from pipeline.process_exit import exit_without_teardown

class SaysWhenFreed:
    def __del__(self):
        sys.stderr.write("teardown ran\\n")

kept = SaysWhenFreed()  # a module global: freed only by the interpreter's teardown
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
{extra}
sys.stdout.write("buffered, no newline")
exit_without_teardown({code})
"""


def run_script(code: str, extra: str = "") -> subprocess.CompletedProcess:
    source = textwrap.dedent(SCRIPT).format(code=code, extra=extra)
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("code", "status"), [("0", 0), ("3", 3), ("None", 0)])
def test_fast_exit_keeps_status_atexit_and_output_and_skips_teardown(code, status):
    completed = run_script(code)
    assert completed.returncode == status, completed.stderr
    assert "atexit ran" in completed.stdout
    assert "buffered, no newline" in completed.stdout
    assert "teardown ran" not in completed.stderr


def test_fast_exit_with_a_message_prints_it_and_exits_1():
    completed = run_script("'something went wrong'")
    assert completed.returncode == 1
    assert "something went wrong" in completed.stderr


def test_a_running_non_daemon_thread_is_waited_for():
    """With a non-daemon thread alive, the usual exit runs: the thread finishes, teardown happens."""
    extra = textwrap.dedent(
        """
        def late_write():
            time.sleep(0.3)
            print("thread finished", flush=True)
        threading.Thread(target=late_write).start()
        """
    )
    completed = run_script("4", extra)
    assert completed.returncode == 4
    assert "thread finished" in completed.stdout
    assert "teardown ran" in completed.stderr


def test_exit_status_follows_the_interpreter(capsys):
    assert exit_status(None) == 0
    assert exit_status(7) == 7
    assert exit_status("bad input") == 1
    assert "bad input" in capsys.readouterr().err


def test_without_cpythons_atexit_runner_the_usual_exit_runs():
    completed = run_script("5", "del atexit._run_exitfuncs")
    assert completed.returncode == 5
    assert "atexit ran" in completed.stdout
    assert "buffered, no newline" in completed.stdout
    assert "teardown ran" in completed.stderr
