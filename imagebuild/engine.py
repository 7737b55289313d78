"""The Docker engine through the docker SDK: connect with errors people can act on, build with
streamed progress and per-stage timings, and export. The legacy builder API streams every step
(`client.api.build(decode=True)`); the Dockerfile needs nothing BuildKit-only."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stackbench.core.errors import BuildFailed, UserError


def errors():
    import docker.errors

    return docker.errors


def connect():
    try:
        import docker
    except ImportError:
        raise UserError("the docker SDK is not installed", where="invoke build",
                        fix="pip install 'stackbench[build]' (./sb installs it)") from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as e:  # noqa: BLE001 - DockerException wraps connection refused / missing socket
        raise UserError(f"no Docker engine answers ({str(e).splitlines()[0][:200]})", where="DOCKER_HOST / "
                        "/var/run/docker.sock", fix="start one: `sudo systemctl start docker`, or `dockerd &` as root; "
                        "or point DOCKER_HOST at a running engine", kind="no_engine") from None
    return client


def explain(message: str) -> tuple[str, str]:
    """(what, fix) for the engine errors people meet."""
    if "could not select device driver" in message:
        return ("no NVIDIA container runtime: the engine cannot give containers a GPU",
                "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker`, "
                "then restart the engine")
    if re.search(r"pull access denied|manifest unknown|i/o timeout|no such host|TLS handshake|connection refused|"
                 r"dial tcp", message):
        return (f"the registry cannot be reached or has no such image: {message.strip()[:300]}",
                "check the network / proxy (--extra-ca for a TLS-inspecting proxy), or pass --base an image the "
                "engine already has (docker images)")
    if "No space left on device" in message:
        return ("the engine ran out of disk", "docker system prune, or move its data-root")
    return message.strip()[:2000], "see the build log above"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class BuildResult:
    image_id: str
    steps: int = 0
    cached_steps: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def fully_cached(self) -> bool:
        return self.steps > 0 and self.cached_steps == self.steps


def build(context: Path, tag: str, say: Callable[[str], None], nocache: bool = False) -> BuildResult:
    """Build the context's Dockerfile (its LABEL line carries the labels, so the file alone says what the image is)."""
    client = connect()
    t0 = time.monotonic()
    result = BuildResult(image_id="")
    stage, stage_t0 = "start", time.monotonic()
    for chunk in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True,
                                  nocache=nocache, pull=False):
        if "error" in chunk:
            what, fix = explain(chunk.get("error", ""))
            last = "\n".join(f"    {line}" for line in result.log[-15:] if line.strip())
            raise BuildFailed(f"the build failed in stage {stage}: {what}\n  last lines:\n{last}",
                              where=f"{context}/Dockerfile", fix=fix)
        text = ANSI.sub("", chunk.get("stream", ""))  # the engine colours a step's stderr
        for line in text.splitlines():
            result.log.append(line)
            m = re.match(r"^Step (\d+)/(\d+) : (.*)$", line)
            if m:
                result.steps = int(m.group(2))
                if m.group(3).startswith("FROM "):  # the base image itself: nothing to rebuild
                    result.cached_steps += 1
                say(f"[{m.group(1)}/{m.group(2)}] {m.group(3)[:150]}")
            elif line.strip() == "---> Using cache":
                result.cached_steps += 1
            elif line.startswith("STACKBENCH-STAGE "):  # the template echoes each stage's name as it starts
                result.stage_seconds[stage] = round(time.monotonic() - stage_t0, 2)
                stage, stage_t0 = line.split()[1], time.monotonic()
            elif line.strip() and not line.startswith(" ---> "):
                say("    " + line[:200])
        if "aux" in chunk and "ID" in chunk["aux"]:
            result.image_id = chunk["aux"]["ID"]
    result.stage_seconds[stage] = round(time.monotonic() - stage_t0, 2)
    result.seconds = round(time.monotonic() - t0, 2)
    if not result.image_id:
        result.image_id = client.images.get(tag).id
    return result


def pull(image: str) -> None:
    """Pull from the image's registry; every failure is a UserError saying what happened (the
    engine answers at once when the registry's name does not resolve, as behind a firewall)."""
    client = connect()
    try:
        client.images.pull(image)  # the SDK splits repository, tag or digest
    except errors().APIError as e:
        what, fix = explain(str(e.explanation or e))
        raise UserError(what, where=f"docker pull {image}", fix=fix, kind="engine") from None
    except Exception as e:  # noqa: BLE001 - a read timeout from a registry that drops packets
        raise UserError(f"the pull of {image} failed: {e}", where=f"docker pull {image}",
                        fix="check the registry and proxy, or pass --base an image the engine has",
                        kind="engine") from None


def image_info(tag: str) -> dict:
    img = connect().images.get(tag)
    return {"id": img.id, "size_bytes": img.attrs.get("Size"), "labels": img.labels,
            "created": img.attrs.get("Created")}


def run(tag: str, command: list[str], *, gpus: bool = False, **kwargs) -> tuple[int, str]:
    """Run a command in a fresh container of the image; (exit code, output). Engine errors
    (no NVIDIA runtime for gpus=True, a missing image) become UserErrors that say what to do."""
    import docker

    client = connect()
    if gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        container = client.containers.run(tag, command, detach=True, **kwargs)
    except docker.errors.APIError as e:
        what, fix = explain(str(e.explanation or e))
        raise UserError(what, where=f"docker run {tag}", fix=fix, kind="engine") from None
    try:
        code = container.wait(timeout=1800)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def export(tag: str, out: Path) -> Path:
    """docker save, for clusters without a registry (then `docker load`, or `enroot import docker-archive://...`)."""
    image = connect().images.get(tag)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        for chunk in image.save(named=True):
            f.write(chunk)
    return out
