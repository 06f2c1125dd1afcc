"""twistd finds the plugin after a regular (non-editable) install, and the wheel has the right files."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from harness import ROOT


def test_wheel_install_exposes_twistd_plugin(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("zmqwamp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/zmqwamp_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names  # must never shadow Twisted's own
    assert "twisted/__init__.py" not in names
    assert "zmqwamp/static/status.html" in names  # /status: read when the site is built
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    # -S: no .pth processing, so the editable checkout is not on the path; only the installed copy is.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    code = (
        "import zmqwamp, twisted.plugin as p; from twisted.application.service import IServiceMaker;"
        "print(zmqwamp.__file__); print(sorted(m.tapname for m in p.getPlugins(IServiceMaker)))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    module_file, taps = out.stdout.splitlines()
    assert module_file.startswith(str(target))
    assert "'zmqwamp'" in taps


def test_editable_install_exposes_twistd_plugin(tmp_path):
    """The venv used by the tests is an editable install: twistd, run elsewhere, lists zmqwamp."""
    twistd = Path(sys.executable).parent / "twistd"
    out = subprocess.run([str(twistd), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "zmqwamp" in out.stdout


def test_version_command():
    from zmqwamp import __version__

    out = subprocess.run([sys.executable, "-m", "zmqwamp", "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"zmqwamp {__version__}"


def test_one_version_everywhere():
    """pyproject.toml's version is the one: zmqwamp.__version__ reads it; js-client says the same."""
    import json
    import re
    import tomllib

    from zmqwamp import __version__

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == version
    assert json.loads((ROOT / "js-client/package.json").read_text())["version"] == version
    assert re.search(r'export const version = "([^"]+)"', (ROOT / "js-client/src/index.js").read_text()).group(1) == version
    banner = (ROOT / "zmqwamp/static/js/zmqwamp.js").read_text()[:200]
    assert f"zmqwamp-client {version} " in banner
    assert not re.search(r"^\s*version\s*=", (ROOT / "setup.py").read_text(), re.M), "setup.py must not set a version"


def test_license_is_the_one_the_metadata_names():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    for path in (ROOT / "LICENSE", ROOT / "js-client/LICENSE"):
        assert path.read_text().startswith("MIT License")
