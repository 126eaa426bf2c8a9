"""The chaos harness: subprocess workers, an out-of-broker ledger, verdicts and a faulty proxy."""

import os

# Set: every scenario at issue 9's full figures; unset: the short CI variants.
FULL = bool(os.environ.get("UPNEXT_CHAOS_FULL"))
