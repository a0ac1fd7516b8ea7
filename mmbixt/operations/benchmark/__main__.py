"""``python -m mmbixt.operations.benchmark``: the benchmark (``tools/benchmark.py``), and the
entry point of its child processes."""
import contextlib

from .run import main

with contextlib.suppress(KeyboardInterrupt):
    main()
