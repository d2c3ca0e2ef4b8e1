"""The python grader's sandbox: results, failures, and canaries for what it must not do.

Canaries run on every isolation backend that works on this machine: ``bwrap`` (bubblewrap,
the default; skipped with a reason where it is not installed) and ``namespaces`` (the opt-in
fallback). Where the fallback is weaker by design — it shares the server's file system — the
test asserts exactly the documented behaviour instead of pretending.
"""

import os
import socket
import time
import uuid

import pytest

from tunesmith.graders import SandboxConfig, grade, grade_many
from tunesmith.graders.sandbox import available_backends, check_source, run_python_grader

WORKING = available_backends()
BACKENDS = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(
            not WORKING["bwrap"], reason="bubblewrap (apt-get install bubblewrap) is not available"
        ),
    ),
    pytest.param(
        "namespaces",
        marks=pytest.mark.skipif(
            not WORKING["namespaces"], reason="unprivileged user namespaces are not available"
        ),
    ),
]
FAST = dict(timeout_s=1.0, startup_timeout_s=10.0, allow_weaker_isolation=True)


def run(source, cases, backend, **overrides):
    return run_python_grader(source, cases, SandboxConfig(backend=backend, **{**FAST, **overrides}))


def one(source, backend, sample=None, item=None, **overrides):
    return run(source, [(sample or {"output_text": ""}, item or {})], backend, **overrides)[0]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def test_grades_a_batch_in_order_with_sample_and_item(backend):
    source = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.25\n"
    cases = [
        ({"output_text": "4"}, {"answer": "4"}),
        ({"output_text": "5"}, {"answer": "4"}),
        ({"output_text": "x"}, {"answer": "x"}),
    ]
    assert [o.score for o in run(source, cases, backend)] == [1.0, 0.25, 1.0]


def test_a_batch_runs_in_one_process_per_batch_size(backend):
    # A token drawn once per process when the module loads (PIDs repeat in fresh namespaces).
    source = "import random\nTOKEN = random.random()\ndef grade(sample, item):\n    return TOKEN\n"
    cases = [({"output_text": ""}, {})] * 10
    assert len({o.score for o in run(source, cases, backend)}) == 1
    assert len({o.score for o in run(source, cases, backend, batch_size=4)}) == 3


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("def grade(sample, item):\n    return 1 / 0\n", "ZeroDivisionError"),
        ("def grade(sample, item):\n    return 'high'\n", "returned str, expected a float"),
        ("def grade(sample, item):\n    return True\n", "returned bool"),
        ("def grade(sample, item):\n    return float('nan')\n", "finite"),
        ("def grade(sample, item):\n    return 10 ** 400\n", "finite"),
        ("def grade(sample, item):\n    raise SystemExit(3)\n", "SystemExit"),
    ],
)
def test_grader_failures_are_runtime_errors_not_exceptions(backend, source, fragment):
    outcome = one(source, backend)
    assert outcome.score is None and outcome.kind == "runtime"
    assert fragment in outcome.error


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("def grade(sample, item)\n    return 1.0\n", "SyntaxError"),
        ("x = 1\n", "does not define a function grade"),
        ("import no_such_module_here\n", "ModuleNotFoundError"),
    ],
)
def test_a_source_that_cannot_load_fails_every_sample_at_once(backend, source, fragment):
    outcomes = run(source, [({"output_text": ""}, {})] * 3, backend)
    assert all(o.kind == "runtime" and fragment in o.error for o in outcomes)


def test_check_source_reports_syntax_errors_from_the_sandbox():
    assert (
        check_source("def grade(s, i):\n    return 1.0\n", SandboxConfig(allow_weaker_isolation=True)) is None
    )
    error = check_source("def grade(s, i)\n    return 1.0\n", SandboxConfig(allow_weaker_isolation=True))
    assert "SyntaxError" in error and "line 1" in error


def test_print_does_not_disturb_the_results(backend):
    source = 'def grade(sample, item):\n    print(\'{"i": 0, "score": 99}\')\n    return 0.5\n'
    assert [o.score for o in run(source, [({"output_text": ""}, {})] * 2, backend)] == [0.5, 0.5]


def test_an_infinite_loop_times_out_and_the_batch_goes_on(backend):
    source = "def grade(sample, item):\n    while item.get('hang'):\n        pass\n    return 1.0\n"
    cases = [({"output_text": ""}, {}), ({"output_text": ""}, {"hang": True}), ({"output_text": ""}, {})]
    start = time.monotonic()
    outcomes = run(source, cases, backend, timeout_s=0.5)
    assert time.monotonic() - start < 5.0
    assert [o.kind for o in outcomes] == [None, "timeout", None]
    assert [o.score for o in outcomes] == [1.0, None, 1.0]
    assert "did not return within 0.5 s" in outcomes[1].error


def test_a_hang_while_loading_fails_all_samples_once(backend):
    start = time.monotonic()
    outcomes = run("while True:\n    pass\n", [({"output_text": ""}, {})] * 5, backend, startup_timeout_s=1.0)
    assert time.monotonic() - start < 5.0
    assert all(o.kind == "timeout" for o in outcomes)


def test_allocating_10_gb_is_a_memory_error(backend):
    source = "def grade(sample, item):\n    data = bytearray(10 * 1024 ** 3)\n    return 1.0\n"
    outcome = one(source, backend, memory_mb=1024)
    assert outcome.score is None and "MemoryError" in outcome.error


def test_a_crashing_process_fails_that_sample_only(backend):
    source = (
        "import os\ndef grade(sample, item):\n"
        "    if item.get('crash'):\n        os._exit(3)\n    return 1.0\n"
    )
    cases = [({"output_text": ""}, {"crash": True}), ({"output_text": ""}, {})]
    outcomes = run(source, cases, backend)
    assert outcomes[0].kind == "server" and "status 3" in outcomes[0].error
    assert outcomes[1].score == 1.0


def test_output_flood_is_cut_off(backend):
    source = "import os\ndef grade(sample, item):\n    os.write(3, b'x' * 10_000_000)\n    return 1.0\n"
    outcome = one(source, backend, max_line_bytes=4096)
    assert outcome.score is None


# --- canaries -----------------------------------------------------------------------------------

TRY_WRITE = """
def grade(sample, item):
    try:
        with open(item['path'], 'w') as f:
            f.write('pwned')
    except OSError:
        return 0.0
    return 1.0
"""


def test_cannot_write_files_outside_the_sandbox(backend):
    target = f"/tmp/pwned-{uuid.uuid4().hex}"
    try:
        outcome = one(TRY_WRITE, backend, item={"path": target})
        assert outcome.score == 0.0
        # bwrap: /tmp in the sandbox is its own tmpfs; namespaces: every mount is read-only.
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


def test_cannot_delete_or_create_files_in_a_directory_the_server_owns(backend, tmp_path):
    victim = tmp_path / "data.db"
    victim.write_text("precious")
    source = (
        "import os\ndef grade(sample, item):\n"
        "    done = 0.0\n"
        "    for op in (lambda: os.remove(item['victim']),\n"
        "               lambda: os.mkdir(item['dir'] + '/new'),\n"
        "               lambda: open(item['dir'] + '/empty', 'x').close()):\n"
        "        try:\n            op()\n            done += 1\n"
        "        except OSError:\n            pass\n"
        "    return done\n"
    )
    assert one(source, backend, item={"victim": str(victim), "dir": str(tmp_path)}).score == 0.0
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.db"]


def test_cannot_reach_the_network_not_even_loopback(backend):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        source = (
            "import socket\ndef grade(sample, item):\n"
            "    try:\n"
            "        socket.create_connection(('127.0.0.1', item['port']), timeout=2).close()\n"
            "    except OSError:\n        return 0.0\n"
            "    return 1.0\n"
        )
        assert one(source, backend, item={"port": port}).score == 0.0
        with pytest.raises(socket.timeout):
            server.accept()  # nothing connected


def test_reading_the_servers_files(backend, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    source = (
        "def grade(sample, item):\n"
        "    try:\n        return 1.0 if open(item['path']).read() == 's3cr3t' else 0.5\n"
        "    except OSError:\n        return 0.0\n"
    )
    read = one(source, backend, item={"path": str(secret)}).score
    if backend == "bwrap":
        assert read == 0.0  # not even visible: only /usr, /lib*, Python are mounted
    else:
        assert read == 1.0  # documented: the namespaces fallback does NOT isolate file reads


def test_cannot_see_the_servers_environment(backend, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CANARY_SECRET", "s3cr3t")
    source = (
        "import os\ndef grade(sample, item):\n"
        "    return 1.0 if 'TUNESMITH_CANARY_SECRET' in os.environ else 0.0\n"
    )
    assert one(source, backend).score == 0.0


def test_cannot_signal_the_servers_processes(backend):
    source = (
        "import os\ndef grade(sample, item):\n"
        "    try:\n        os.kill(item['pid'], 0)\n    except OSError:\n        return 0.0\n"
        "    return 1.0\n"
    )
    assert one(source, backend, item={"pid": os.getpid()}).score == 0.0


def test_without_bubblewrap_the_default_refuses_instead_of_running_weakly(monkeypatch):
    monkeypatch.setattr("tunesmith.graders.sandbox._bwrap_works", lambda binary: False)
    spec = {"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1.0\n"}
    result = grade(spec, "x", {})
    assert result.score == 0.0 and "bubblewrap" in result.error
    assert result.metadata["errors"]["python_grader_server_error"] is True


def test_grade_many_maps_sandbox_failures_to_openai_error_flags():
    spec = {
        "type": "python",
        "name": "p",
        "source": (
            "def grade(sample, item):\n"
            "    if sample['output_text'] == 'hang':\n        while True:\n            pass\n"
            "    if sample['output_text'] == 'boom':\n        raise ValueError('boom')\n"
            "    return len(sample['output_text']) / 10\n"
        ),
    }
    results = grade_many(
        spec,
        ["abcd", "boom", "hang"],
        [{}, {}, {}],
        sandbox_config=SandboxConfig(timeout_s=0.5, allow_weaker_isolation=True),
    )
    assert results[0].score == pytest.approx(0.4) and results[0].error is None
    assert results[1].metadata["errors"]["python_grader_runtime_error"] is True
    assert "ValueError: boom" in results[1].metadata["errors"]["python_grader_runtime_error_details"]
    assert results[2].metadata["errors"]["unresponsive_reward_error"] is True
    assert [r.score for r in results[1:]] == [0.0, 0.0]
