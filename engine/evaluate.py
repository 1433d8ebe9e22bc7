"""``python -m engine.evaluate``: evaluate a checkpoint (see engine.train.evaluate)."""
import sys

from engine.train.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
