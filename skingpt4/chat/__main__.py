import sys

from skingpt4.chat.cli import main

sys.exit(main())
