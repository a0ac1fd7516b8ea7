"""Turns palette-coloured label maps (RGB images whose colours are the config's palette) into
label maps of class ids, for every split of a config.

    python tools/convert_masks.py CONFIG (--out-dir DIR | --overwrite) [--splits train val test]
        [--ignore-colour R,G,B ...] [--cfg-options key=value ...]

Colour ``i`` of the palette becomes class ``i`` (``i + 1`` under ``reduce_zero_label``); colours
given by ``--ignore-colour`` become 255 (ignored). A colour outside both is refused naming the
file, the pixel and the colour. Maps that already hold class ids are left alone. Each file is
written atomically; the inputs are kept unless ``--overwrite``.
"""
import sys

from mmbixt.operations.checks.convert_masks import main
from mmbixt.operations.cli import run_cli

if __name__ == '__main__':
    sys.exit(run_cli(main))
