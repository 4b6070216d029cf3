"""The ``diffase`` command on bad input, resumes and empty results (issue 11, items 1, 3-6, 8, 12).

Bad input is refused with one line on stderr and exit code 2, before any output is created; ``--debug``
shows the traceback; a bug keeps its traceback. Runs use a tiny random score network and few noise levels.
"""

import json

import pytest

from diffase.cli import main
from tests.test_inpainting import host, tiny_model_path  # noqa: F401 (fixtures: fcc O host, tiny score model)


# --- item 8: one line for a user's error, the traceback with --debug or for a bug ---------------------------
def test_user_error_is_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["csp", "Li5Xx2", "--guest", "Li", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diffase csp: error: ") and "Xx is not a chemical element" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_debug_shows_the_traceback(tmp_path):
    from diffase.errors import UnknownElementError

    with pytest.raises(UnknownElementError, match="Xx"):
        main(["--debug", "csp", "Li5Xx2", "--guest", "Li", "--out", str(tmp_path / "x")])


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import diffase.workflows.csp as csp

    def broken(*args, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(csp, "parse_composition", broken)
    with pytest.raises(ZeroDivisionError):
        main(["csp", "Li5Si2", "--guest", "Li", "--out", str(tmp_path / "x")])


def test_unreadable_host_file_is_one_line_naming_the_file(host, tmp_path, capsys):
    path = tmp_path / "cut.cif"
    path.write_text(host.to(fmt="cif")[:200])
    assert main(["inpaint", str(path), "--guest", "Mg", "--count", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut.cif" in err and not (tmp_path / "r").exists()
