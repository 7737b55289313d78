"""`python -m stackbench TASK ...`: the same command line as `./sb TASK ...`, where stackbench is installed."""

from stackbench.cli import main

main()
