"""``python analyses/feature_reuse.py``: MAML vs ANIL, rapid learning or feature reuse?

The documented path of the feature-reuse command, kept as a thin script: the command
itself is :func:`repscope.feature_reuse.main` (also ``repscope feature-reuse``), which
sits above the subpackages because it runs training's stages and its freezing test. Run
``python analyses/feature_reuse.py --help`` for every option.
"""
import sys

# Run as a script, sys.path[0] is analyses/: the package is imported by its full name.
from repscope.feature_reuse import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
