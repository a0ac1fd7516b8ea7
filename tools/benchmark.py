"""Speed and memory of BiXT against its peers, measured in one run on the CPU (issue 22).

    python tools/benchmark.py [--original /path/to/BiXT]    # the suite (`make bench`)
    python tools/benchmark.py --quick                        # a smoke run with tiny sizes
    python tools/benchmark.py --sections forward scaling --sizes 512 1024 --out work_dirs/bench

``--help`` lists the sections and options; the benchmark itself is the package
``mmbixt.operations.benchmark`` (one module per section).
"""
import contextlib

from mmbixt.operations.benchmark import main

if __name__ == '__main__':
    with contextlib.suppress(KeyboardInterrupt):
        main()
