"""python -m reports given the wrong thing: a file instead of a run's folder, a results.json
that is not UTF-8, or one edited by hand so that a field has the wrong type.

Each must end in one `error:` line that names the problem and the fix, with exit status 2
(docs/bench.md, "From results to a report"), never a traceback.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from reports.cli import main
from tests.test_reports import run_cli, synthetic_run, write_run


def assert_one_error_line(done, *phrases: str) -> str:
    """The CLI exited 2 with a single `error:` line containing every phrase; returns the line."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, (phrase, done.stderr)
    return done.stderr


# --------------------------------------------------------------------- a file instead of a folder


def test_results_csv_is_answered_with_the_folder_that_holds_results_json(tmp_path):
    folder = write_run(tmp_path / "latest", synthetic_run())
    csv = folder / "results.csv"
    error = assert_one_error_line(
        run_cli(str(csv)),
        f"{csv} is a file, but python -m reports reads the folder a bench run wrote (the one holding results.json), "
        "or that results.json itself",
        f"give it that folder: `python -m reports {folder}`")
    assert "does not exist" not in error and f"--out {csv}" not in error


def test_another_file_in_a_folder_without_results_json_says_to_run_the_bench(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my measurements")
    assert_one_error_line(run_cli(str(notes)), f"{notes} is a file, but python -m reports reads the folder",
                          # make bench alone would write results/latest, not the folder asked for
                          f"{tmp_path} has no results.json either; run the bench first: `make bench RESULTS={tmp_path}`",
                          f"`python -m bench --out {tmp_path}`")


def test_the_commands_an_error_suggests_quote_a_folder_with_a_space(tmp_path):
    """`make bench RESULTS=my run` copied from the message would measure into ./my and pass `run` on."""
    folder = tmp_path / "my run"
    assert_one_error_line(run_cli(str(folder)), f"run the bench first: `make bench RESULTS='{folder}'` "
                                                f"or `python -m bench --out '{folder}'`")


def test_a_results_json_that_is_a_folder_is_called_a_folder(tmp_path):
    (tmp_path / "run" / "results.json").mkdir(parents=True)
    error = assert_one_error_line(run_cli(str(tmp_path / "run")),
                                  f"{tmp_path / 'run' / 'results.json'} is a folder, not the results.json file the bench writes")
    assert "has no results.json" not in error


def test_a_results_csv_that_does_not_exist_suggests_its_folder_not_itself(tmp_path):
    csv = tmp_path / "nowhere" / "results.csv"
    error = assert_one_error_line(run_cli(str(csv)), f"{csv} does not exist, but python -m reports reads the folder",
                                  f"`python -m bench --out {tmp_path / 'nowhere'}`")
    assert f"--out {csv}" not in error


def test_results_json_itself_is_the_run_and_the_report_goes_beside_it(tmp_path):
    folder = write_run(tmp_path / "latest", synthetic_run())
    done = run_cli(str(folder / "results.json"))
    assert done.returncode == 0, done.stderr
    assert (folder / "report" / "report.md").exists() and (folder / "report" / "handout.md").exists()


# --------------------------------------------------------------------- not UTF-8


def test_a_results_json_that_is_not_utf8_says_so_not_permissions(tmp_path):
    folder = tmp_path / "latin1"
    folder.mkdir()
    text = json.dumps(synthetic_run()).replace('"python"', '"pythön"', 1)
    (folder / "results.json").write_bytes(text.encode("latin-1"))  # ö is one byte, 0xF6: not UTF-8
    error = assert_one_error_line(run_cli(str(folder)), f"{folder / 'results.json'} is not UTF-8 text",
                                  "so it is not a results.json written by the bench; run the bench again")
    assert "permissions" not in error


# --------------------------------------------------------------------- fields of the wrong type


def _emulated_relay(run: dict) -> dict:
    return next(s for s in run["scenarios"] if s["config"]["link"] == "emulated")


def _baseline(run: dict, test: str) -> dict:
    return next(b for b in run["baselines"] if b["test"] == test)


# phrase the error must contain -> how to spoil a sound run. Each is a hand edit that used to
# reach a table, a chart or the handout and fail there (a traceback, or a KeyError that did
# not name the field).
WRONG_TYPES = {
    # A link given by name instead of its fields, a verdict in words, a payload in words.
    "scenarios[5].config.link_config is not an object (the --link fields, e.g. {\"loss\": 0.05, \"delay_ms\": 10.0}) or null":
        lambda r: _emulated_relay(r)["config"].update(link_config="issue4"),
    "ratios[0].met is not true, false or null (null: not measured)": lambda r: r["ratios"][0].update(met="yes"),
    "scenarios[2].config.payload is not a whole number (the body's size in bytes)":
        lambda r: r["scenarios"][2]["config"].update(payload="big"),
    # The fields beside them that the report reads too.
    "scenarios[5].config.link_config.loss is not a number":
        lambda r: _emulated_relay(r)["config"]["link_config"].update(loss="5%"),
    "scenarios[0].config.link is not a string (\"loopback\", \"emulated\" or \"remote\")":
        lambda r: r["scenarios"][0]["config"].update(link=["loopback"]),
    "scenarios[7].config.kcp_scenario is not an object": lambda r: r["scenarios"][7]["config"].update(kcp_scenario="kcp"),
    "scenarios[5].link.counters is not an object": lambda r: _emulated_relay(r)["link"].update(counters=[200, 10]),
    "scenarios[5].link.counters.up.nft_dropped is not a whole number":
        lambda r: _emulated_relay(r)["link"]["counters"]["up"].update(nft_dropped="ten"),
    "scenarios[0].server.cpu_s is not a number": lambda r: r["scenarios"][0]["server"].update(cpu_s="0.25 s"),
    "scenarios[0].figures.latency.count is not a whole number":
        lambda r: r["scenarios"][0]["figures"]["latency"].update(count="five"),
    "scenarios[0].figures.latency.jitter_rfc3550 is not a number":
        lambda r: r["scenarios"][0]["figures"]["latency"].update(jitter_rfc3550="low"),
    "scenarios[0].figures.delivery.foreign is not a whole number":
        lambda r: r["scenarios"][0]["figures"]["delivery"].update(foreign="none"),
    "scenarios[7].figures.kcp_readme_avg_max_rtt_ms is not a list of two numbers (average, maximum)":
        lambda r: r["scenarios"][7]["figures"].update(kcp_readme_avg_max_rtt_ms=[138]),
    "\"command\" is not a list (the bench's command line, one word per item)":
        lambda r: r.update(command="python -m bench"),
    "ratios[0].detail is not a string": lambda r: r["ratios"][0].update(detail=["25.5 us", "15.0 us"]),
    "\"interrupted\" is not true, false or null (true: Ctrl-C or SIGTERM stopped the run)": lambda r: r.update(interrupted="no"),
    "\"stopped_by\" is not \"Ctrl-C\", \"SIGTERM\" or null (what stopped an interrupted run)":
        lambda r: r.update(interrupted=True, stopped_by="SIGKILL"),
    "baselines[0].config is missing or not an object": lambda r: r["baselines"][0].pop("config"),
    "baselines[0] (ping-pong-tcp) has no figures.latency": lambda r: r["baselines"][0]["figures"].pop("latency"),
    "baselines[2] (tcp-throughput) has no figures.goodput_MB_per_s":
        lambda r: _baseline(r, "tcp-throughput")["figures"].pop("goodput_MB_per_s"),
    "baselines[4].config.sleep_us is not a number (the sleep before each timed round trip, in µs)":
        lambda r: _baseline(r, "protocol-work-udp")["config"].update(sleep_us="50 us"),
    "baselines[3].config.cores is not an object with \"client\" and \"server\" (or null: not pinned)":
        lambda r: _baseline(r, "paired-hello-tcp")["config"].update(cores=[0, 1]),
    "baselines[1].figures is not an object":  # a baseline that did not run, with figures made up
        lambda r: r["baselines"][1].update(figures="none"),
}


@pytest.mark.parametrize("phrase", list(WRONG_TYPES))
def test_a_field_of_the_wrong_type_is_named_in_one_error_line(tmp_path, capsys, phrase):
    run = copy.deepcopy(synthetic_run())
    WRONG_TYPES[phrase](run)
    (tmp_path / "results.json").write_text(json.dumps(run))  # JSON only: the CSV writer needs a sound run
    assert main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {tmp_path / 'results.json'} does not follow schema hellohi-bench/1: ")
    assert phrase in captured.err and captured.err.count("\n") == 1, captured.err
    assert "run the bench again" in captured.err


@pytest.mark.parametrize("written, said", [
    *((constant, "which is not a number in JSON") for constant in ("NaN", "Infinity", "-Infinity")),
    # Valid JSON, but Python reads it as infinity: the latency table printed "inf" as a p50.
    *((number, "a number too large to be a measurement") for number in ("1e999", "-1e999")),
])
def test_a_figure_that_is_no_finite_number_is_refused_by_name_not_printed_as_nan_or_inf(tmp_path, capsys, written, said):
    run = copy.deepcopy(synthetic_run())
    run["scenarios"][0]["figures"]["latency"]["p50"] = 0.125
    (tmp_path / "results.json").write_text(json.dumps(run).replace("0.125", written, 1))
    assert main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert f"results.json holds {written}, {said}" in captured.err
    assert "edited by hand: run the bench again" in captured.err


def test_a_sound_run_passes_every_check(tmp_path):
    # The checks above must not refuse what the bench writes. The synthetic run's scenarios and
    # ratios come from the bench's code, its baselines are written by hand; so a few real
    # baselines, measured here by the bench's own functions, go in beside them.
    from bench import protocol_work, python_floor

    run = synthetic_run()
    run["baselines"] += [protocol_work.measure("udp", round_trips=20), protocol_work.measure("udp-raw", round_trips=20),
                         python_floor.echo_pingpong("udp", seconds=0.2), python_floor.stop_and_wait_pingpong(seconds=0.2)]
    assert [b["status"] for b in run["baselines"][-4:]] == ["ok", "ok", "ok", "ok"]
    folder = write_run(tmp_path / "r", run)
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 0
    handout = (tmp_path / "out" / "handout.md").read_text()
    assert re.search(r"answer is the ack, sent again after silence; `bench/python_floor.py`\), p50: [\d.,]+ µs round trip", handout)
