import sys

from tokrl.cli import main

sys.exit(main())
