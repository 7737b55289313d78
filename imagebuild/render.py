"""Profile + lock -> a build context: the rendered Dockerfile, the lock, the wheelhouse (or an empty
one: the image then installs from PyPI), extra CA certificates, stackbench's own code. The tag is
content-addressed (profile name + lock hash); the labels carry the resolved versions."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import jinja2

from stackbench.core.stack import dists
from stackbench.imagebuild.lock import Lock
from stackbench.imagebuild.profile import ROOT, Profile, dist_name
from stackbench.imagebuild.sources import prebuilt_wheel_glob

TEMPLATE = ROOT / "docker" / "Dockerfile.j2"
# what runs inside the image
SOURCES = ("stackbench", "core", "trainer", "bench", "envcheck", "report", "recipes", "tasks.py", "pyproject.toml")
LABELLED = dists("labelled")  # core/stack.py: the one list of packages


def tag(profile: Profile, lock: Lock) -> str:
    """stackbench/<profile>:<lock hash>; an image built without a locked piece says so in its tag."""
    without = "".join(f"-no-{dist}" for dist in sorted(profile.left_out))
    return f"stackbench/{profile.name}:{lock.hash[:12]}{without}"


def base_source(profile: Profile) -> str:
    """Where the base comes from, as the image's label keeps it (the same on every rebuild)."""
    if profile.bootstrap:
        return profile.bootstrap.describe()
    return "--base (given on the command line)" if profile.base_given else "registry"


def labels(profile: Profile, lock: Lock) -> dict[str, str]:
    pins = {name: v for name, v in lock.pins().items() if name not in profile.left_out}
    out = {
        "org.opencontainers.image.title": f"stackbench {profile.name}",
        "org.opencontainers.image.description": profile.description,
        "org.opencontainers.image.version": lock.hash[:12],
        "org.opencontainers.image.base.name": profile.base,
        "stackbench.base.source": base_source(profile),
        "stackbench.profile": profile.name,
        "stackbench.lock_hash": lock.hash,
        "stackbench.cuda": profile.cuda or "none",
        "stackbench.python": profile.python,
        "stackbench.versions": json.dumps(pins, sort_keys=True, separators=(",", ":")),
    }
    out.update({f"stackbench.version.{name}": pins[name] for name in LABELLED if name in pins})
    out.update({f"stackbench.git.{name}": spec["commit"] for name, spec in profile.git.items()})
    out.update({f"stackbench.left_out.{name}": why for name, why in profile.left_out.items()})
    return out


def dockerfile(profile: Profile, lock: Lock, *, offline: bool) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["shell_quote"] = shlex.quote
    env.filters["format_provides"] = lambda lib: f"{lib} (= 999)"  # satisfies any (>= driver) the toolkit asks for
    sdists = []
    for req in profile.sdists:
        name, version = dist_name(req), req.split("==")[1]
        sdists.append((name, prebuilt_wheel_glob(name, version),
                       {**profile.build_env, **profile.sdist_env.get(name, {})}))
    return env.get_template(TEMPLATE.name).render(
        p=profile, tag=tag(profile, lock), lock_hash=lock.hash, labels=labels(profile, lock), sdists=sdists,
        has_overrides=bool(profile.overrides), left_out=json.dumps(profile.left_out, sort_keys=True),
        pip_source="--no-index --find-links /wheelhouse" if offline else "")


def context(profile: Profile, lock: Lock, out: Path, *, wheelhouse: Path | None = None,
            extra_ca: Path | None = None) -> Path:
    """Write the build context to `out` (replaced). Files are copied in a fixed order with fixed
    content, so an unchanged profile, lock and code give the engine an unchanged context (a cache hit)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "Dockerfile").write_text(dockerfile(profile, lock, offline=wheelhouse is not None))
    shutil.copytree(lock.path, out / "lock")
    (out / "wheelhouse").mkdir()
    if wheelhouse is not None:
        for f in sorted(wheelhouse.iterdir()):
            if f.is_file():
                _link_or_copy(f, out / "wheelhouse" / f.name)
    (out / "ca").mkdir()
    if extra_ca is not None:
        for f in sorted(extra_ca.glob("*.crt")):
            shutil.copy2(f, out / "ca" / f.name)
    (out / "sources").mkdir()
    for name, spec in sorted(profile.git.items()):
        if spec.get("source"):  # a checkout fetched beforehand (--git-source): its files at the commit, no .git
            shutil.copytree(spec["source"], out / "sources" / name, ignore=shutil.ignore_patterns(".git"))
    src = out / "stackbench"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)  # a GB of wheels need not be copied
    except OSError:
        shutil.copy2(src, dst)
