"""``python -m uncertain_repr.train ...`` / ``torchrun --nproc_per_node=N -m uncertain_repr.train ...``."""

import sys

from .launch import main

if __name__ == "__main__":
    sys.exit(main())
