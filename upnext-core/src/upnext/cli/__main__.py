"""`python -m upnext.cli` runs the `upnext` command."""

import sys

from upnext.cli import main

sys.exit(main())
