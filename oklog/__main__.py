import sys

from oklog.cli import main

sys.exit(main())
