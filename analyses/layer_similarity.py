"""``python analyses/layer_similarity.py``: train (if needed), record, analyse, report.

The documented path of the end-to-end command, kept as a thin script: the command itself
is :func:`repscope.reproduce.main` (also ``repscope layer-similarity``), which sits above
the subpackages because it runs training's stages with training's own presets, checkpoint
layout and data folders. Run ``python analyses/layer_similarity.py --help`` for every
option.
"""
import sys

# Run as a script, sys.path[0] is analyses/: the package is imported by its full name.
from repscope.reproduce import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
