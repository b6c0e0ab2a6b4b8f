"""The one line every entry script runs first (after putting the repo root on ``sys.path``)::

    import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
    import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

Importing this module applies :func:`common.cpu_env.apply_cpu_env` (OpenMP threads = cores /
local processes, ``MKL_DEBUG_CPU_TYPE=5`` on AMD only, nothing the user exported is changed),
which must happen before ``import paddle``: paddle's CPU kernels read these variables when its
shared libraries load.  Sibling modules of the script (its own folder is ``sys.path[0]``) are then
imported by plain name, as in facebookresearch/DiT.  Importing it twice is harmless.
"""
from common.cpu_env import apply_cpu_env

CPU_ENV = apply_cpu_env()  # warns on stderr if paddle is already imported
