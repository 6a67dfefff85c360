"""The shared Lambda layer, bundled on this machine: no Docker at synth, ever.

Layer layout (Lambda mounts it at /opt):

    python/        the locked dependencies of the project and the `lambda` group, as arm64 wheels for
                   CPython 3.12, plus the shared package `switchboard` (layers/switchboard)
    agents/        the agent definitions (AGENTS_DIR=/opt/agents)

The dependencies are exactly what `uv export --frozen --no-default-groups --group lambda --no-emit-project`
lists, hashes checked, installed for the Lambda platform (`--python-platform aarch64-manylinux2014
--python-version 3.12 --only-binary :all:`: the same wheel selection as `pip --platform`, with uv, which
the project already uses for every other install, the Dockerfile's included). boto3 and botocore are in
that list and so in the layer, although the runtime has its own: the functions then run on the versions
they were tested against, not on whatever the runtime ships that month (about 25 MB of the 250 MB limit).

Installed dependencies are kept in a cache keyed by the requirements and the target platform, so a
second synth copies them instead of resolving and unpacking again.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, FileSystem, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parents[1]
# The agents the layer and the media image ship (streaming/Dockerfile copies the same folder).
SHIPPED_AGENTS = REPO_ROOT / "agents"
PYTHON_VERSION = "3.12"
PLATFORM = "aarch64-manylinux2014"
LAYER_PYTHON = "python"
LAYER_AGENTS = "agents"
AGENTS_DIR_IN_LAMBDA = f"/opt/{LAYER_AGENTS}"
_SOURCE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


class BundlingError(RuntimeError):
    """The layer could not be built; the message carries the installer's own output."""


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        raise BundlingError("uv is needed to bundle the Lambda layer (make venv installs it)")
    return found


def lambda_requirements() -> str:
    """The locked requirements of the functions (hashes included), from uv.lock."""
    result = subprocess.run(  # noqa: S603 - a fixed command line, no user input
        [
            _uv(),
            "export",
            "--frozen",
            "--no-default-groups",
            "--group",
            "lambda",
            "--no-emit-project",
            "--no-header",
            "--no-annotate",
            "--quiet",
            # The CDK CLI runs the app with FORCE_COLOR set, which would colour the text pip reads.
            "--color",
            "never",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BundlingError(f"uv export failed:\n{result.stderr}")
    return result.stdout


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard" / "lambda-dependencies"


def installed_dependencies(requirements: str) -> Path:
    """A directory holding the requirements installed for the Lambda platform, built once per lock."""
    key = hashlib.sha256(f"{PLATFORM}\n{PYTHON_VERSION}\n{requirements}".encode()).hexdigest()[:32]
    target = _cache_root() / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the cache entry and renamed into place, so a synth stopped half-way (or a parallel one)
    # never leaves a partial entry that a later synth would take as complete.
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        requirements_file = Path(work) / "requirements.txt"
        requirements_file.write_text(requirements)
        staged = Path(work) / "site"
        result = subprocess.run(  # noqa: S603 - a fixed command line, no user input
            [
                _uv(),
                "pip",
                "install",
                "--quiet",
                "--target",
                str(staged),
                "--python-platform",
                PLATFORM,
                "--python-version",
                PYTHON_VERSION,
                "--only-binary",
                ":all:",
                "--require-hashes",
                "--no-deps",
                "--no-compile",
                "--requirements",
                str(requirements_file),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BundlingError(f"installing the Lambda dependencies failed:\n{result.stderr}")
        try:
            staged.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    return target


@jsii.implements(ILocalBundling)
class SharedLayerBundler:
    """Builds the layer directory in the asset's output directory (CDK's local bundling)."""

    def __init__(self, requirements: str) -> None:
        self._requirements = requirements

    # jsii hands the BundlingOptions over as one positional struct; nothing in it is needed here.
    def try_bundle(self, output_dir: str, *_options: Any, **_keywords: Any) -> bool:
        out = Path(output_dir)
        shutil.copytree(installed_dependencies(self._requirements), out / LAYER_PYTHON, dirs_exist_ok=True)
        shutil.copytree(REPO_ROOT / "layers" / "switchboard", out / LAYER_PYTHON / "switchboard", ignore=_SOURCE_IGNORE)
        shutil.copytree(SHIPPED_AGENTS, out / LAYER_AGENTS, ignore=_SOURCE_IGNORE)
        return True


def shared_layer_code() -> lambda_.Code:
    """The layer's code asset. Its hash is that of its inputs (the lock's requirements, the shared package,
    the agents), known before bundling: CDK skips bundling when that asset is already staged."""
    requirements = lambda_requirements()
    source_hash = hashlib.sha256()
    source_hash.update(f"{PLATFORM}\n{PYTHON_VERSION}\n{requirements}".encode())
    for source in (REPO_ROOT / "layers" / "switchboard", SHIPPED_AGENTS):
        source_hash.update(FileSystem.fingerprint(str(source), exclude=["__pycache__", "*.pyc"]).encode())
    return lambda_.Code.from_asset(
        str(REPO_ROOT / "layers"),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=source_hash.hexdigest(),
        bundling=BundlingOptions(
            # Required by the API, never pulled: local bundling always succeeds or raises.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.12"),
            local=SharedLayerBundler(requirements),
        ),
    )


def function_code(name: str) -> lambda_.Code:
    """One function's own folder (its thin handler.py); everything it imports is in the layer."""
    return lambda_.Code.from_asset(str(REPO_ROOT / "functions" / name), exclude=["__pycache__", "*.pyc"])
