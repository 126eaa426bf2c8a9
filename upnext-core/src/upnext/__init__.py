"""upnext: async background jobs with pluggable brokers."""
