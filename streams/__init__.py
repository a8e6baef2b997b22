"""torghut-streams: the multi-account execution plane of the Torghut trading system."""
