"""Choosing the event loop: uvloop when installed, asyncio's own on request or where uvloop is missing."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from hellohi import eventloop
from hellohi.launcher import REPO_ROOT


@pytest.fixture(autouse=True)
def no_inherited_choice(monkeypatch):
    monkeypatch.delenv(eventloop.ENVIRONMENT, raising=False)


def test_auto_means_uvloop_when_installed_and_asyncio_when_not(monkeypatch):
    assert eventloop.resolve() == eventloop.resolve("auto") == "uvloop"  # requirements.txt installs it here
    assert eventloop.resolve("asyncio") == "asyncio"
    monkeypatch.setattr(eventloop, "_uvloop_module", lambda: None)
    assert eventloop.resolve("auto") == "asyncio"
    with pytest.raises(eventloop.LoopUnavailable, match="uvloop is not installed.*--loop asyncio"):
        eventloop.resolve("uvloop")


def test_the_environment_gives_the_default_and_a_flag_overrides_it(monkeypatch):
    monkeypatch.setenv(eventloop.ENVIRONMENT, "asyncio")
    assert eventloop.resolve() == "asyncio"
    assert eventloop.resolve("uvloop") == "uvloop"
    monkeypatch.setenv(eventloop.ENVIRONMENT, "tokio")
    with pytest.raises(eventloop.LoopUnavailable, match="'tokio' is not one of auto, uvloop, asyncio"):
        eventloop.resolve()


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_uses_the_chosen_loop(choice):
    async def which():
        return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"

    assert eventloop.run(which(), choice) == choice


def test_apply_choice_hands_the_loop_down_to_child_processes(monkeypatch):
    monkeypatch.setenv(eventloop.ENVIRONMENT, "auto")  # so that the test's end restores the environment
    assert eventloop.apply_choice("asyncio") == "asyncio"
    child = subprocess.run([sys.executable, "-c", "from hellohi import eventloop; print(eventloop.resolve())"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert child.stdout.strip() == "asyncio"


def test_a_bad_choice_in_the_environment_is_a_message_not_a_traceback():
    env = {"PATH": "/usr/bin:/bin", eventloop.ENVIRONMENT: "tokio"}
    done = subprocess.run([sys.executable, "-m", "tcp.server", "--port", "0"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "never awaited" not in done.stderr
    assert "error: event loop 'tokio' is not one of auto, uvloop, asyncio (from --loop or $HELLOHI_LOOP)" in done.stderr
