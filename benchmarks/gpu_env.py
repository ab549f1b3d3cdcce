"""The GPU check's environment: what the project needs, what this Python has, what to
install from a local wheels folder (offline), and how to fill that folder where a package
index can be reached (``gpu_check.py --fetch-wheels``).

Only the standard library and ``packaging`` (which transformers and accelerate already
need) are imported: this module runs before anything is installed. The machine's own
build of torch (and its CUDA packages) is never installed, upgraded or downloaded here:
every install pins it to the version found.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = "trl-plus"
# the machine's CUDA build of torch and what comes with it: never installed, upgraded or fetched here
TORCH_FAMILY = re.compile(r"^(torch|triton|pytorch-triton.*|nvidia-.*|cuda-.*)$")
WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version


def project_requirements(pyproject: Path = REPO / "pyproject.toml") -> tuple[list[str], list[str]]:
    """``[project] dependencies`` and ``[build-system] requires``, the pins as written."""
    text = pyproject.read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the two arrays, read by pattern
        return _array(text, "project", "dependencies"), _array(text, "build-system", "requires")
    data = tomllib.loads(text)
    return list(data["project"]["dependencies"]), list(data["build-system"]["requires"])


def _array(text: str, table: str, key: str) -> list[str]:
    section = re.search(rf"^\[{re.escape(table)}\]\s*$(.*?)(?=^\[|\Z)", text, re.S | re.M)
    body = re.search(rf"^{key}\s*=\s*\[(.*?)\]\s*$", section.group(1) if section else "", re.S | re.M)
    return re.findall(r'"([^"]+)"', body.group(1)) if body else []


def installed_lookup(fake: str | None = None):
    """``name -> version or None``. ``fake`` ("torch==2.5.1,peft,...") stands in for this
    Python's packages (a name without a version counts as satisfying any pin)."""
    if fake is not None:
        table = {}
        for item in filter(None, (part.strip() for part in fake.split(","))):
            name, _, version = item.partition("==")
            table[canonical(name)] = version or "*"
        return lambda name: table.get(canonical(name))

    def real(name: str):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return real


@dataclass
class Need:
    name: str
    spec: str  # the pin, e.g. ">=1.16,<2"
    have: str | None  # installed version; "*" unknown but present
    status: str  # ok | missing | outdated
    optional: bool = False  # installed when the folder has it; without it a part is skipped

    @property
    def requirement(self) -> str:
        return f"{self.name}{self.spec}"


def check(requirements: list[str], lookup) -> list[Need]:
    Requirement, Version = _packaging()
    needs = []
    for line in requirements:
        req = Requirement(line)
        have = lookup(req.name)
        if have is None:
            status = "missing"
        elif have == "*" or not str(req.specifier):
            status = "ok"
        else:
            status = "ok" if req.specifier.contains(Version(have), prereleases=True) else "outdated"
        spec = re.sub(r"\s+", "", line.split(";")[0])[len(req.name):]  # as written: ">=2.4,<3"
        needs.append(Need(canonical(req.name), spec, have, status))
    return needs


def project_status(lookup, fake: bool) -> str:
    """ok (importable from this repository), missing, or elsewhere (installed from another folder)."""
    if lookup(PROJECT) is None:
        return "missing"
    if fake:
        return "ok"
    import importlib.util

    spec = importlib.util.find_spec("trl_plus")
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    return "ok" if origin and REPO in origin.parents else "elsewhere"


def folder_files(folder: Path) -> dict[str, list[str]]:
    """``canonical name -> file names`` of the wheels and source archives in ``folder``."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.endswith(WHEEL_SUFFIXES):
            found.setdefault(canonical(path.name.split("-")[0]), []).append(path.name)
    return found


@dataclass
class Plan:
    needs: list[Need]
    project: str
    setuptools_ok: bool
    wheels: Path
    files: dict[str, list[str]]
    problems: list[str]

    @property
    def to_install(self) -> list[Need]:
        return [n for n in self.needs if n.status != "ok" and not TORCH_FAMILY.match(n.name)
                and (n.name in self.files or not n.optional)]

    def project_command(self, python: str) -> list[str] | None:
        """The editable install of this repository, or None when the repository goes on PYTHONPATH."""
        if self.project == "ok":
            return None
        if self.setuptools_ok:  # the build backend is here: build without an isolated environment
            return [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "-e", str(REPO)]
        if "setuptools" in self.files:  # pip builds its isolated environment from the folder
            return [python, "-m", "pip", "install", "--no-index", "--find-links", str(self.wheels), "--no-deps",
                    "-e", str(REPO)]
        return None

    def install_command(self, python: str, constraints: str) -> list[str] | None:
        if not self.to_install:
            return None
        return [python, "-m", "pip", "install", "--no-index", "--find-links", str(self.wheels),
                "--constraint", constraints, *(n.requirement for n in self.to_install)]


def plan(wheels: Path, fake: str | None = None, optional: tuple[str, ...] = ()) -> Plan:
    """What this Python lacks of the project's pins (and of ``optional``), and where from."""
    lookup = installed_lookup(fake)
    deps, build = project_requirements()
    needs = check(deps, lookup) + [Need(**{**vars(n), "optional": True}) for n in check(list(optional), lookup)]
    build_needs = [n for n in check(build, lookup) if n.name == "setuptools"]
    files = folder_files(wheels)
    problems = []
    for n in needs:
        if TORCH_FAMILY.match(n.name) and n.status != "ok":
            problems.append(f"{n.name} {n.have or 'is not installed'}{' does not meet ' + n.spec if n.have else ''}: this "
                            "check never installs torch; install the machine's CUDA build of torch first")
    missing_files = [n.name for n in needs if n.status != "ok" and not n.optional and not TORCH_FAMILY.match(n.name)
                     and n.name not in files]
    if missing_files:
        problems.append(f"not in the wheels folder {wheels}: {', '.join(missing_files)} "
                        "(fill it with --fetch-wheels where a package index can be reached)")
    result = Plan(needs, project_status(lookup, fake is not None), all(n.status == "ok" for n in build_needs), wheels,
                  files, problems)
    if fake is None and (result.to_install or result.project != "ok"):
        result.problems += _pip_problems()
    return result


def _pip_problems() -> list[str]:
    """Why pip could not install into this Python, if it could not."""
    import importlib.util
    import sysconfig

    problems = []
    if importlib.util.find_spec("pip") is None:
        problems.append("this Python has no pip (python3 -m ensurepip, offline, adds it)")
    managed = Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED"
    if managed.exists() and sys.prefix == sys.base_prefix:
        problems.append("this Python is managed by the system (PEP 668): make a virtual environment that sees its "
                        "torch, `python3 -m venv --system-site-packages .venv`, and run with PYTHON=.venv/bin/python")
    return problems


def torch_constraints(lookup, names=("torch", "triton", "pytorch-triton")) -> str:
    """Lines pinning the torch family to what is installed (pip may then not replace it)."""
    return "".join(f"{name}=={lookup(name)}\n" for name in names if lookup(name) not in (None, "*"))


def pip_dry_run(p: Plan, python: str) -> str:
    """What pip would install from the folder, offline (its own resolution), or why it cannot."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "torch.txt"
        constraints.write_text(torch_constraints(installed_lookup()))
        proc = subprocess.run([*p.install_command(python, str(constraints)), "--dry-run"], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("Would install")]
    if proc.returncode == 0:
        return "pip, offline: " + (lines[-1] if lines else "nothing to install")
    return "pip, offline, would FAIL:\n" + "\n".join(proc.stderr.strip().splitlines()[-6:])


def run_pip(cmd: list[str], log) -> int:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd).returncode


def install(p: Plan, python: str, log) -> dict:
    """Install what ``p`` lacks, offline; what was done and whether the project is installed
    (otherwise its children import it from the repository, on PYTHONPATH)."""
    done: dict = {"installed": [n.requirement for n in p.to_install], "project": p.project}
    if p.to_install:
        constraints = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "torch-as-installed.txt"
        constraints.write_text(torch_constraints(installed_lookup()))
        if run_pip(p.install_command(python, str(constraints)), log):
            raise SystemExit(f"installing from {p.wheels} failed (command above); nothing was measured")
    project = p.project_command(python)
    if project is None and p.project != "ok":
        log("trl-plus: no setuptools >= 77 here nor in the wheels folder: the repository goes on PYTHONPATH instead")
        done["project"] = "PYTHONPATH"
    elif project:
        done["project"] = "installed" if run_pip(project, log) == 0 else "PYTHONPATH (editable install failed)"
    return done


# -- filling the folder where an index can be reached ---------------------------------------


def _local(url: str) -> Path:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(url).path)).resolve()


def platform_flags(python_version: str, glibc: str) -> list[str]:
    major, minor = (int(x) for x in glibc.split("."))
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
    abi = "cp" + python_version.replace(".", "")
    return [f for tag in tags for f in ("--platform", tag)] + [
        "--python-version", python_version, "--implementation", "cp", "--abi", abi, "--only-binary=:all:"]


def fetch(dest: Path, python_version: str, glibc: str, torch_version: str | None, have: Path | None, log,
          extra: tuple[str, ...] = ()) -> int:
    """Download into ``dest`` wheels of the project's dependencies (the pins of pyproject.toml)
    and its build backend for Linux x86_64 and ``python_version``, except the torch family
    and what ``have`` (``pip freeze`` of the target machine) lists. Packages published only
    as source are built into wheels here first (they must be pure Python to suit the target;
    one whose build imports torch, as DeepSpeed's does, is built against this Python's)."""
    pip = [sys.executable, "-m", "pip"]
    dest.mkdir(parents=True, exist_ok=True)
    deps, build = project_requirements()
    # a local label (2.5.1+cu124) names a build no index serves; the version is what resolution needs
    pins = {canonical(k): v.split("+")[0] for k, v in (line.split("==", 1) for line in (have.read_text().split()
                                                       if have else []) if "==" in line)}
    if torch_version:
        pins["torch"] = torch_version
    work = Path(tempfile.mkdtemp(prefix="gpu-wheels-"))
    reqs, cons = work / "requirements.txt", work / "constraints.txt"
    reqs.write_text("\n".join(r for r in deps + build + list(extra) if not TORCH_FAMILY.match(canonical(re.split(r"[<>=!~; ]", r)[0]))))
    cons.write_text("".join(f"{k}=={v}\n" for k, v in pins.items()))
    resolve = [*pip, "install", "--dry-run", "--ignore-installed", "--quiet", "-r", str(reqs), "-c", str(cons)]
    # 1. here, for this Python: which resolved packages exist only as source archives
    log(f"resolving {reqs.read_text().count(chr(10)) + 1} requirements (torch pinned to {pins.get('torch', 'any')})")
    if subprocess.run([*resolve, "--report", str(work / "here.json")]).returncode:
        return 1
    for item in json.loads((work / "here.json").read_text())["install"]:
        url = item["download_info"]["url"]
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if not url.endswith(".whl") and canonical(name) not in pins:
            log(f"building {name} {version} (published as source only)")
            wheel = [*pip, "wheel", "--quiet", "--no-deps", "-w", str(dest), f"{name}=={version}"]
            if subprocess.run(wheel).returncode and subprocess.run([*wheel, "--no-build-isolation"]).returncode:
                return 1
    # 2. for the target: the same requirements, wheels only (those just built are found in dest)
    target = platform_flags(python_version, glibc)
    # (--target: older pips take platform options only with it; a dry run writes nothing there)
    resolve_target = [*resolve, *target, "--find-links", str(dest), "--target", str(work / "target")]
    if subprocess.run([*resolve_target, "--report", str(work / "target.json")]).returncode:
        return 1
    urls, kept = [], []
    for item in json.loads((work / "target.json").read_text())["install"]:
        name = canonical(item["metadata"]["name"])
        if TORCH_FAMILY.match(name) or name in pins:
            continue
        kept.append(f"{name}=={item['metadata']['version']}")
        url = item["download_info"]["url"]
        if not (url.startswith("file:") and _local(url).parent == dest.resolve()):  # else built into dest above
            urls.append(url)
    log(f"downloading {len(urls)} wheels into {dest}")
    if urls and subprocess.run([*pip, "download", "--quiet", "--no-deps", "-d", str(dest), *urls]).returncode:
        return 1
    (dest / "MANIFEST.txt").write_text(
        f"# for Python {python_version}, manylinux (glibc {glibc}) x86_64; torch and CUDA packages not included\n"
        + "\n".join(sorted(kept)) + "\n")
    size = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
    log(f"{dest}: {len(kept)} packages, {size / 2**20:.0f} MiB (list in MANIFEST.txt)")
    return 0
