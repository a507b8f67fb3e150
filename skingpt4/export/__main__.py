import sys

from skingpt4.export.cli import main

sys.exit(main())
