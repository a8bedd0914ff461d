"""Reference implementations copied from their public repositories, for tests only."""
