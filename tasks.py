"""stackbench's tasks: `./sb --list` (`python -m tasks`; plain `invoke` reads this file too). They
are assembled in stackbench/cli/: the user's commands (user.py) and the image, gpu and dev
collections; each task parses its flags and calls a library function."""

from stackbench.cli import main, namespace, program

ns = program.namespace  # what `invoke` itself loads from this file
__all__ = ["main", "namespace", "ns", "program"]

if __name__ == "__main__":
    main()
