"""The packages as their users get them: the wheel and sdist, installed in a fresh venv; the npm tarball,
installed in a fresh project.  Part of `make test-deploy` (they build and install, ~1 minute)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from harness import ROOT, Process, start_bridge, start_rep

JS_CLIENT = ROOT / "js-client"
NPM = shutil.which("npm")
NODE = shutil.which("node")

pytestmark = pytest.mark.timeout(600)


def run(argv, cwd=None, env=None, timeout=300, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"{argv}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def source_copy(destination: Path) -> Path:
    """The files git tracks (a clean checkout), plus the working tree's changes to them."""
    listed = run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A wheel built from a copy of the tree with a stale build/lib (a module that no longer exists),
    and an sdist of the same tree."""
    tree = source_copy(tmp_path_factory.mktemp("tree"))
    stale = tree / "build" / "lib" / "zmqwamp"
    stale.mkdir(parents=True)
    (stale / "removed.py").write_text("REMOVED = True\n")
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(tree)])
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(dist), str(tree)])
    [wheel] = dist.glob("zmqwamp-*.whl")
    [sdist] = dist.glob("zmqwamp-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "dist": dist}


def test_wheel_ships_no_stale_module_and_has_license_and_metadata(built):
    names = zipfile.ZipFile(built["wheel"]).namelist()
    assert "zmqwamp/removed.py" not in names, "a module left in a stale build/lib was shipped"
    assert "zmqwamp/static/js/zmqwamp.js" in names and "zmqwamp/static/index.html" in names
    assert "twisted/plugins/zmqwamp_plugin.py" in names and "twisted/plugins/__init__.py" not in names
    [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = zipfile.ZipFile(built["wheel"]).read(meta).decode()
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Framework :: Twisted" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_sdist_has_no_tests_and_builds_the_same_wheel(built, tmp_path):
    """The sdist carries the package, not the test suite (which needs the whole checkout); a wheel built
    from it has the same files."""
    with tarfile.open(built["sdist"]) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert not any(n.startswith("tests/") for n in names), [n for n in names if n.startswith("tests/")]
    assert {"LICENSE", "pyproject.toml", "README.md", "zmqwamp/static/js/zmqwamp.js"} <= set(names)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(built["sdist"])])
    [again] = tmp_path.glob("zmqwamp-*.whl")
    strip = lambda names: sorted(n for n in names if ".dist-info/" not in n)  # noqa: E731
    assert strip(zipfile.ZipFile(again).namelist()) == strip(zipfile.ZipFile(built["wheel"]).namelist())


def _as_nobody() -> list[str]:
    """Run unprivileged when we are root (a read-only directory is read-only only to others)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot run the bridge unprivileged to see a read-only install")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def _start_readonly_bridge(venv: Path) -> Process:
    proc = Process([*_as_nobody(), str(venv / "bin" / "zmqwamp"), "--listen", "tcp:0:interface=127.0.0.1", "--anonymous"],
                   cwd="/")
    proc.wait_for(r"starting on (\d+)")
    return proc


def test_wheel_in_a_fresh_venv_runs_and_needs_no_writable_plugin_dir(built):
    """pip install the wheel (and its dependencies) into a new venv: `zmqwamp --version`, the twistd plugin,
    the served bundle; and with Twisted's plugin cache built at install time, a read-only install
    (ProtectSystem=, a container's non-root user) starts without "Unable to write to plugin cache"."""
    home = Path(tempfile.mkdtemp(prefix="zmqwamp-venv-"))
    try:
        os.chmod(home, 0o755)  # the unprivileged run below must reach the venv
        venv = home / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", str(built["wheel"])], timeout=600)
        from zmqwamp import __version__

        assert run([str(venv / "bin" / "zmqwamp"), "--version"], cwd="/").stdout.strip() == f"zmqwamp {__version__}"
        assert "zmqwamp" in run([str(venv / "bin" / "twistd"), "--help"], cwd="/").stdout
        plugins = next(venv.glob("lib/python*/site-packages/twisted/plugins"))
        for cache in plugins.glob("dropin.cache"):  # the --help above may have written one as root
            cache.unlink()

        # Read-only without a cache: the message the issue saw at every start (shows this test can see it).
        os.chmod(plugins, 0o555)
        proc = _start_readonly_bridge(venv)
        proc.stop()
        assert "Unable to write to plugin cache" in proc.output, proc.output[-2000:]

        # The documented install step (README, Dockerfile): build the cache once, as the installing user.
        os.chmod(plugins, 0o755)
        run([str(venv / "bin" / "python"), "-c", "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"])
        assert (plugins / "dropin.cache").exists()
        os.chmod(plugins, 0o555)
        proc = _start_readonly_bridge(venv)
        try:
            port = proc.wait_for(r"starting on (\d+)").group(1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/js/zmqwamp.js", timeout=5) as r:
                assert r.status == 200 and b"zmqwamp-client" in r.read(200)
        finally:
            proc.stop()
        assert "Unable to write to plugin cache" not in proc.output, proc.output[-2000:]
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)


# -- npm ------------------------------------------------------------------------------------------

needs_npm = pytest.mark.skipif(
    NPM is None or NODE is None or not (JS_CLIENT / "node_modules" / "esbuild").exists(),
    reason="needs node, npm and js-client/node_modules (make test-deploy installs them)",
)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("npm")
    run([NPM, "pack", "--silent", "--pack-destination", str(out)], cwd=JS_CLIENT)
    [tgz] = out.glob("zmqwamp-client-*.tgz")
    return tgz


@needs_npm
def test_npm_pack_of_a_fresh_copy_says_what_it_needs(tmp_path):
    """npm pack runs prepack (the esbuild build): without `npm ci` first it says so in one line."""
    copy = tmp_path / "js-client"
    shutil.copytree(JS_CLIENT, copy, ignore=shutil.ignore_patterns("node_modules", "dist"))
    out = run([NPM, "pack", "--pack-destination", str(tmp_path)], cwd=copy, check=False)
    assert out.returncode != 0
    assert "run `npm ci` first" in out.stdout + out.stderr


@needs_npm
def test_npm_tarball_installs_and_every_export_works(tarball, tmp_path):
    """Install the packed tarball into a new project; import every entry point of `exports` (ESM and CJS)
    and the `browser` field's file in Node; no install scripts for consumers."""
    with tarfile.open(tarball) as tar:
        manifest = json.loads(tar.extractfile("package/package.json").read())
        files = set(tar.getnames())
    assert not {"preinstall", "install", "postinstall", "prepare"} & set(manifest.get("scripts", {}))
    assert "package/LICENSE" in files and "package/dist/zmqwamp.browser.cjs" in files
    project = tmp_path / "app"
    project.mkdir()
    (project / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true}')
    run([NPM, "install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", str(tarball), "ws@8"], cwd=project,
        timeout=600)
    api = ["Context", "ERRORS", "PUB", "REP", "REQ", "SUB", "ZmqError", "version"]
    esm = (
        'import * as main from "zmqwamp-client"; import * as browser from "zmqwamp-client/browser";\n'
        f"const api = {json.dumps(api)};\n"
        'for (const [name, m] of [["main", main], ["browser", browser]]) for (const k of api) if (!(k in m)) throw new Error(name + " lacks " + k);\n'
        'console.log("esm ok", main.version, browser.version);\n'
    )
    cjs = (
        'const main = require("zmqwamp-client"), browser = require("zmqwamp-client/browser");\n'
        'const pkg = require("zmqwamp-client/package.json");\n'
        'const viaField = require(require("path").join(require.resolve("zmqwamp-client/package.json"), "..", pkg.browser));\n'
        f"const api = {json.dumps(api)};\n"
        'for (const [name, m] of [["main", main], ["browser", browser], ["browser field", viaField]])\n'
        '  for (const k of api) if (!(k in m)) throw new Error(name + " lacks " + k);\n'
        'console.log("cjs ok", pkg.version);\n'
    )
    (project / "esm.mjs").write_text(esm)
    (project / "cjs.cjs").write_text(cjs)
    assert run([NODE, "esm.mjs"], cwd=project).stdout.startswith("esm ok")
    assert run([NODE, "cjs.cjs"], cwd=project).stdout.startswith("cjs ok")

    # and the installed package really talks to a bridge (Node 20: WebSocket from ws)
    rep, rep_addr = start_rep()
    bridge, url = start_bridge("--anonymous", "--allow", rep_addr)
    try:
        (project / "use.cjs").write_text(
            'const zmq = require("zmqwamp-client");\n'
            f'const ctx = zmq.Context({json.dumps(url)}, {{WebSocket: require("ws").WebSocket}});\n'
            f'ctx.Socket(zmq.REQ, {json.dumps(rep_addr)}).request("hi", {{timeout: 5000}})\n'
            '  .then((r) => { console.log(r); return ctx.close(); }, (e) => { console.error(e); process.exit(1); });\n'
        )
        assert run([NODE, "use.cjs"], cwd=project, timeout=60).stdout.strip() == "got this hi"
    finally:
        bridge.stop()
        rep.stop()
