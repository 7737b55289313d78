"""`./sb` (and `python -m stackbench`): the tasks, assembled. The user's commands sit at the top
(bench, plan, calibrate, envcheck, build, report); the rest live in collections by job (image.*,
gpu.*, dev.*), each also under the flat name it had before (lock, gpu-reference, test ...), so
nothing typed yesterday stops working. tests/unit/test_cli_surface.py freezes what this offers."""

from __future__ import annotations

from invoke import Collection

from stackbench.cli import dev, gpu, image, user
from stackbench.cli.program import StackbenchProgram

# the flat names the collections' tasks keep: {collection: {task name in it: its flat name}}
FLAT = {
    image: {"lock": "lock", "wheelhouse": "wheelhouse", "base_image": "base-image"},
    gpu: {"wheels": "gpu-wheels", "reference": "gpu-reference"},
    dev: {"test": "test", "benchmark": "benchmark", "swift_env": "swift-env", "pinned_env": "pinned-env"},
}


def namespace() -> Collection:
    root = Collection.from_module(user)
    for module, names in FLAT.items():
        collection = Collection.from_module(module, name=module.__name__.rpartition(".")[2])
        root.add_collection(collection)
        for name, flat in names.items():
            root.add_task(getattr(module, name), name=flat)
    return root


program = StackbenchProgram(namespace=namespace(), name="stackbench", binary="./sb", version="0.1.0")


def main() -> None:
    import os
    import sys

    try:
        program.run()
    except BrokenPipeError:  # `./sb ... | head`: the reader has what it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, what a shell reports for the same
