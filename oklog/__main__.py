import sys

from oklog.cli.commands import main

sys.exit(main())
