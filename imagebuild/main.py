"""`invoke build`, `invoke lock`, `invoke wheelhouse`, `invoke base-image`: thin orchestration
of profile -> rules -> lock -> context -> engine -> manifest."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from envcheck import compat
from imagebuild import lock as lock_mod
from imagebuild import profile as profile_mod
from imagebuild import render
from imagebuild.profile import ROOT, Profile
from core import record
from core.errors import UserError


def _say(line: str) -> None:
    print(line, flush=True)


def select(profile: str = "", cuda: str = "", overrides: dict[str, str] | None = None) -> Profile:
    name = profile or profile_mod.for_cuda(cuda or "12.4")
    return profile_mod.load(name, {k: v for k, v in (overrides or {}).items() if v})


def check_rules(prof: Profile, versions: dict[str, str | None], stage: str) -> list[dict]:
    """Refuse a known-bad combination before an hour of compiling finds it."""
    hits = compat.violations(versions)
    bad = [h for h in hits if h["status"] == "fail"]
    for h in hits:
        if h["status"] != "fail":
            _say(f"warning ({stage}): {h['message']}\n  fix: {h['fix']}\n  {h.get('link', '')}")
    if bad:
        raise UserError("; ".join(h["message"] for h in bad), where=f"profile {prof.name} ({stage})",
                        fix="; ".join(f"{h['fix']} ({h.get('link', '')})" for h in bad), kind="incompatible")
    return hits


def plan(prof: Profile) -> lock_mod.Lock:
    check_rules(prof, {**prof.pins(), "cuda": prof.cuda or None}, "profile pins")
    lock = lock_mod.load(prof)
    check_rules(prof, lock.versions_for_rules(prof), "resolved lock")
    return lock


def lock(profile: str = "", cuda: str = "") -> int:
    prof = select(profile, cuda)
    check_rules(prof, {**prof.pins(), "cuda": prof.cuda or None}, "profile pins")
    t0 = time.monotonic()
    resolved = lock_mod.resolve(prof)
    check_rules(prof, resolved.versions_for_rules(prof), "resolved lock")
    _say(f"{prof.name}: {len(resolved.pins())} pins -> {resolved.path} (lock {resolved.hash[:12]}, "
         f"{time.monotonic() - t0:.0f} s)")
    return 0


def wheelhouse(profile: str = "", cuda: str = "", out: str = "") -> int:
    prof = select(profile, cuda)
    target = Path(out or ROOT / ".cache" / "wheelhouse" / prof.name)
    lock_mod.wheelhouse(prof, lock_mod.load(prof), target)
    _say(f"{prof.name}: {len(list(target.iterdir()))} files in {target} (build with --wheelhouse {target})")
    return 0


def build(*, profile: str = "", cuda: str = "", torch: str = "", deepspeed: str = "", flash_attn: str = "",
          base: str = "", wheelhouse_dir: str = "", extra_ca: str = "", export: str = "", render_only: bool = False,
          nocache: bool = False, results: str = "results") -> int:
    from imagebuild import engine

    versions = {k: v for k, v in {"torch": torch, "deepspeed": deepspeed, "flash-attn": flash_attn}.items() if v}
    prof = select(profile, cuda, {**versions, "base": base})
    if versions:  # a derived stack: its own name and lock, checked against the rules before resolving
        prof.name += "+" + "+".join(f"{k}{v}" for k, v in versions.items())
        check_rules(prof, {**prof.pins(), "cuda": prof.cuda or None}, "profile pins")
        if not (prof.lock_dir / "wheels.txt").exists():
            _say(f"resolving a lock for {prof.name} (overrides {versions})")
            lock_mod.resolve(prof)
    lock = plan(prof)
    tag = render.tag(prof, lock)
    ctx = render.context(prof, lock, ROOT / ".cache" / "build" / prof.name,
                         wheelhouse=Path(wheelhouse_dir) if wheelhouse_dir else None,
                         extra_ca=Path(extra_ca) if extra_ca else None)
    if render_only:
        _say(f"{tag}: context in {ctx} (Dockerfile: {ctx / 'Dockerfile'})")
        return 0
    _say(f"building {tag} from {prof.base} (lock {lock.hash[:12]}, {'wheelhouse' if wheelhouse_dir else 'PyPI'})")
    result = engine.build(ctx, tag, _say, nocache=nocache)
    info = engine.image_info(tag)
    manifest = {
        "schema": "stackbench.image/1", "profile": prof.name, "tag": tag, "image_id": result.image_id,
        "lock_hash": lock.hash, "base": prof.base, "cuda": prof.cuda or None, "size_bytes": info["size_bytes"],
        "build_seconds": result.seconds, "stage_seconds": result.stage_seconds, "steps": result.steps,
        "cached_steps": result.cached_steps, "fully_cached": result.fully_cached,
        "wheelhouse": bool(wheelhouse_dir), "labels": info["labels"], "built_at": record.now(),
    }
    if export:
        out = engine.export(tag, Path(export))
        manifest["export"] = {"path": str(out), "bytes": out.stat().st_size, "load": f"docker load -i {out}",
                              **_other_runtimes(out)}
    path = record.write(Path(results) / "images" / f"{prof.name}-{lock.hash[:12]}.json", manifest)
    _say(f"{tag}: {result.image_id[:19]}, {info['size_bytes'] / 2**30:.2f} GiB, {result.seconds:.1f} s"
         f"{' (every step from cache)' if result.fully_cached else ''}; manifest {path}")
    return 0


def _other_runtimes(tar: Path) -> dict:
    """How to run the export where Docker is not the runtime (Slurm clusters: pyxis/enroot, Apptainer)."""
    notes = {"enroot": f"enroot import docker-archive://{tar}  # then srun --container-image=<the .sqsh>",
             "apptainer": f"apptainer build {tar.with_suffix('.sif')} docker-archive://{tar}"}
    notes["found_here"] = [t for t in ("enroot", "apptainer", "singularity") if shutil.which(t)]
    return notes


def base_image(tag: str = "local/bookworm:minbase") -> int:
    from imagebuild import base_image as base_mod

    info = base_mod.make(tag)
    _say(json.dumps(info))
    return 0

