import sys

from asynctaskmanager.cli import main

sys.exit(main())
