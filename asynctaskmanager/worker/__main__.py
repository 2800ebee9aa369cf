import sys

from asynctaskmanager.worker.app import main

sys.exit(main())
