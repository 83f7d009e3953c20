"""Build step: compile the Glassbox proto into glassbox/_proto with grpc_tools.protoc.

The proto lives outside this project, at ../../proto/glassbox/v1/glassbox.proto in the
repository. It is found, in order, under:

1. $GLASSBOX_PROTO_DIR (a directory holding glassbox/v1/glassbox.proto);
2. ./proto, which is where an sdist of this project carries a copy (see `sdist` below);
3. ../../proto, the repository's proto directory. pip >= 21.3 builds a local directory in
   place, so `pip install ./client/python` sees it.

The generated modules land in glassbox/_proto/glassbox/v1/ (the proto's own path below a private
package). protoc writes absolute imports ("from glassbox.v1 import glassbox_pb2") that would
resolve against this package, so they are rewritten to relative ones.

The runtime dependencies (grpcio, protobuf, numpy, tqdm) are declared here rather than in
pyproject.toml because generated code checks at import time that grpcio and protobuf are at
least as new as the generator; the lower bounds are taken from the generator that actually ran.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PROTO_FILE = Path("glassbox") / "v1" / "glassbox.proto"
GENERATED_PACKAGE = Path("glassbox") / "_proto"  # relative to a package root (src/ or build/lib)


def find_proto_root() -> Path:
    env = os.environ.get("GLASSBOX_PROTO_DIR")
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / PROTO_FILE).is_file():
            raise SystemExit(f"GLASSBOX_PROTO_DIR={env}: no {PROTO_FILE} there")
        return root
    candidates = [HERE / "proto", HERE.parent.parent / "proto"]
    for root in candidates:
        if (root / PROTO_FILE).is_file():
            return root
    raise SystemExit(
        f"cannot find {PROTO_FILE}: looked under {', '.join(str(c) for c in candidates)}. "
        "Build from the repository checkout with pip >= 21.3 (which builds local directories in "
        "place), or set GLASSBOX_PROTO_DIR to the repository's proto/ directory."
    )


def generate(out_root: Path) -> str:
    """Writes glassbox/_proto/... under out_root; returns the protobuf gencode version."""
    from grpc_tools import protoc  # a build requirement

    proto_root = find_proto_root()
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    out = out_root / GENERATED_PACKAGE
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(proto_root / PROTO_FILE),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {proto_root / PROTO_FILE}")

    v1 = out / "glassbox" / "v1"
    for package in (out, out / "glassbox", v1):
        (package / "__init__.py").write_text('"""Generated from proto/ at build time; do not edit."""\n')
    for module in v1.glob("*.py*"):
        text = module.read_text()
        fixed = re.sub(r"^from glassbox\.v1 import ", "from . import ", text, flags=re.MULTILINE)
        if fixed != text:
            module.write_text(fixed)

    header = (v1 / "glassbox_pb2.py").read_text()
    match = re.search(r"^# Protobuf Python Version: (\d+\.\d+\.\d+)", header, re.MULTILINE)
    if match:
        return match.group(1)
    import google.protobuf

    return google.protobuf.__version__


_generated: dict = {}


def generated_tree() -> Path:
    """Generates once per build into a temporary directory that build_py copies from."""
    if "root" not in _generated:
        root = Path(tempfile.mkdtemp(prefix="glassbox-proto-"))
        _generated["protobuf"] = generate(root)
        _generated["root"] = root
    return _generated["root"]


def runtime_requirements() -> list:
    from importlib.metadata import version

    generated_tree()
    grpc_version = version("grpcio-tools")
    protobuf_version = _generated["protobuf"]
    protobuf_major = int(protobuf_version.split(".")[0])
    return [
        f"grpcio>={grpc_version}",
        # The gencode accepts a runtime of the same major version or the next one.
        f"protobuf>={protobuf_version},<{protobuf_major + 2}",
        "numpy>=1.21",
        "tqdm>=4.62",  # ScanJob.wait's progress bar
    ]


class BuildPyWithProto(build_py):
    def run(self) -> None:
        super().run()
        # An editable install imports from src/, so the modules go there (git-ignored);
        # otherwise into the build tree the wheel is made from.
        target_root = HERE / "src" if self.editable_mode else Path(self.build_lib)
        target = target_root / GENERATED_PACKAGE
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated_tree() / GENERATED_PACKAGE, target)


class SdistWithProto(sdist):
    def make_release_tree(self, base_dir, files) -> None:
        super().make_release_tree(base_dir, files)
        dest = Path(base_dir) / "proto" / PROTO_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(find_proto_root() / PROTO_FILE, dest)


setup(
    install_requires=runtime_requirements(),
    cmdclass={"build_py": BuildPyWithProto, "sdist": SdistWithProto},
)
