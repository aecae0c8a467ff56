"""Start-up like a well-kept CLI: `--help` and bad flags answer without importing torch, diffusers,
transformers, peft or gradio (they load where they are used). Each case runs in a fresh interpreter, as
a user's `unitune` does, and reports which of those libraries it imported."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers", "peft", "gradio")

PROBE = """
import json, sys
from unitune.cli import main
sys.argv = ["unitune", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exit:
    code = exit.code
print("PROBE", json.dumps([code, [name for name in {heavy!r} if name in sys.modules]]))
"""


def run_cli(*args: str) -> tuple[int, list[str], str]:
    """(exit code, the heavy libraries imported, the output) of `unitune ARGS` in a fresh interpreter."""
    command = [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    code, heavy = json.loads(line.removeprefix("PROBE "))
    return code, heavy, output


def test_importing_the_package_and_the_cli_loads_no_heavy_library():
    code = f"import unitune, unitune.cli, sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args, exit_code, says",
    [
        (["--help"], 0, "unitune edit photo.png"),
        (["edit", "--help"], 0, "--guidance"),
        (["cache", "--help"], 0, "prune"),
        (["edit", "--bogus"], 2, "--bogus"),
        (["edit", "photo.png", "a hat", "--strength", "2"], 2, "unitune: error: strength must be in (0, 1]"),
        (["sweep", "photo.png", "a hat", "--guidances", "x"], 2, "unitune: error: --guidances"),
    ],
)
def test_help_and_bad_flags_answer_without_torch(args, exit_code, says):
    code, heavy, output = run_cli(*args)
    assert code == exit_code and says in output
    assert heavy == [], f"`unitune {' '.join(args)}` imported {heavy}"


def test_the_public_names_still_import():
    import unitune

    assert {"Editor", "EditSettings", "TuneSettings", "save_results"} <= set(dir(unitune))
    from unitune import Editor, TuneResult, read_settings  # noqa: F401

    with pytest.raises(AttributeError):
        unitune.no_such_name  # noqa: B018
